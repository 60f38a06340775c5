"""`tailrace status --watch` off a terminal: a frame per interval, exit 0 on a signal."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from helpers import ROOT, write_config


def watch(tmp_path: Path, redis_url: str, prefix: str, *extra: str) -> subprocess.Popen[bytes]:
    cfg = write_config(tmp_path / "p.yaml", {
        "service": {"prefix": prefix, "partitions": 2, "data_dir": str(tmp_path / "data")},
        "pipeline": {"outputs": [{"name": "stdout", "alias": "out"}]}})
    return subprocess.Popen(
        [sys.executable, "-m", "tailrace", "status", "-c", str(cfg), "--watch",
         "--interval", "0.3", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env=dict(os.environ, TAILRACE_BROKER=redis_url))


def frames_then_stop(proc: subprocess.Popen[bytes], marker: bytes, sig: int) -> tuple[str, str]:
    """Read while it runs until 3 frames arrived (each flushed as it is made), then signal."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    started = time.monotonic()
    try:
        while sum(line.startswith(marker) for line in seen.splitlines()) < 3:
            left = 30 - (time.monotonic() - started)
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            assert ready, f"fewer than 3 frames within 30 s while running: {seen[-2000:]!r}"
            chunk = os.read(fd, 65536)
            assert chunk, (seen, proc.communicate())
            seen += chunk
    except AssertionError:
        proc.kill()
        proc.communicate()
        raise
    took = time.monotonic() - started
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, (sig, proc.returncode, err.decode()[-2000:])
    return (seen + out).decode(), err.decode() + f"\n(3 frames in {took:.1f}s)"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_watch_into_a_pipe_prints_a_frame_per_interval_and_exits_0_on_a_signal(
        tmp_path: Path, redis_url: str, prefix: str, sig: int) -> None:
    proc = watch(tmp_path, redis_url, prefix)
    out, err = frames_then_stop(proc, b"# status at ", sig)
    frames = out.count("# status at ")
    assert frames >= 3, out
    assert out.count("consumer groups") == frames and "sink:out" in out
    assert "Traceback" not in err, err


def test_watch_json_into_a_pipe_prints_one_document_per_line(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    proc = watch(tmp_path, redis_url, prefix, "--json")
    out, _ = frames_then_stop(proc, b"{", signal.SIGTERM)
    docs = [orjson.loads(line) for line in out.splitlines() if line]
    assert len(docs) >= 3 and all("groups" in d for d in docs), out[:2000]

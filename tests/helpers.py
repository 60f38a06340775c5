"""Test helpers: configs on disk, role processes, reading pipeline outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from tailrace.cli.registry import build_registry
from tailrace.config import Config, parse_config

__all__ = [
    "Role",
    "count_lines",
    "load_test_config",
    "read_json_lines",
    "wait_for",
    "write_config",
]

ROOT = Path(__file__).resolve().parent.parent


EXAMPLE = ROOT / "examples" / "tailrace-example"


def install_example(tmp: Path) -> Path:
    """The example plugin package installed (a real pip build, no network) into a folder of
    its own under ``tmp``; returns that folder (for ``sys.path`` or ``PYTHONPATH``)."""
    import shutil
    src = tmp / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                    "--target", str(target), str(src)], check=True)
    return target


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def load_test_config(text: str, filename: str = "test.yaml") -> Config:
    return parse_config(text, filename, build_registry(entry_points=False))


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    """Poll ``cond`` until truthy; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def count_lines(path: Path) -> int:
    """Complete lines in ``path`` so far (tolerates a write in progress); 0 if missing."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))
    except FileNotFoundError:
        return 0


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with a partial line"
    return [orjson.loads(line) for line in data.splitlines() if line]


def id_counts(records: list[dict[str, Any]], key: str = "_id") -> Counter[str]:
    return Counter(str(r[key]) for r in records)


class Role:
    """A tailrace role as a real process (``python -m tailrace ROLE -c CONFIG``)."""

    def __init__(self, role: str, config: Path, broker: str, *extra: str,
                 log: Path | None = None) -> None:
        self.role = role
        self.args = [sys.executable, "-m", "tailrace", role, "-c", str(config), *extra]
        self.env = dict(os.environ, TAILRACE_BROKER=broker, PYTHONUNBUFFERED="1")
        self.log_path = log or config.parent / f"{role}-{id(self)}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Role:
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the role (and anything it started)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError(f"{self.role} did not stop on SIGTERM within {timeout}s:"
                                     f"\n{self.output()[-3000:]}") from None
        self.log_file.close()
        return int(self.proc.returncode)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

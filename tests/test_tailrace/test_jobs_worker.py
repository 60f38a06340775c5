"""`tailrace worker` (RQ jobs: backfill, replay) is a worker like the others: it shows in
`status`, `/metrics` and `/api/v1/status` with its role and state."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import redis
from helpers import ROOT, Role, wait_for, write_config
from redis_server import free_port

from tailrace.keys import Keys
from tailrace.status import collect


def rq_workers(r: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    doc = collect(r, Keys(prefix), 2, [])
    return [w for w in doc["workers"] if w.get("role") == "worker"]


def test_an_rq_worker_shows_its_role_state_and_jobs_everywhere(
        tmp_path: Path, redis_url: str, prefix: str, r: redis.Redis) -> None:
    http = f"127.0.0.1:{free_port()}"
    logs = tmp_path / "old.log"
    logs.write_text("".join(f"line {i}\n" for i in range(100)))
    cfg = write_config(tmp_path / "p.yaml", {
        "service": {"prefix": prefix, "partitions": 2, "data_dir": str(tmp_path / "data"),
                    "publish_interval_s": 0.3, "http": http},
        "pipeline": {"inputs": [{"name": "tail", "path": str(tmp_path / "*.log")}],
                     "outputs": [{"name": "stdout"}]}})
    worker = Role("worker", cfg, redis_url, "--queue", "backfill").start()
    try:
        idle = wait_for(lambda: [w for w in rq_workers(r, prefix) if w["state"] == "idle"],
                        timeout=30, message="the RQ worker's record, idle")
        assert idle[0]["queues"] == ["backfill"] and idle[0]["pid"] == worker.proc.pid
        with urllib.request.urlopen(f"http://{http}/api/v1/status", timeout=5) as resp:
            served = orjson.loads(resp.read())
        records = served if isinstance(served, list) else served.get("workers", served)
        assert any(rec.get("role") == "worker" for rec in records), served
        with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert any('role="worker"' in line and 'state="idle"' in line and line.endswith(" 1.0")
                   for line in metrics.splitlines()), metrics[:3000]
        table = subprocess.run([sys.executable, "-m", "tailrace", "status", "-c", str(cfg)],
                               capture_output=True, text=True, cwd=ROOT, timeout=60,
                               env={**worker.env})
        assert table.returncode == 0 and "worker" in table.stdout and "idle" in table.stdout, \
            table.stdout + table.stderr
        enq = subprocess.run([sys.executable, "-m", "tailrace", "backfill", "-c", str(cfg),
                              "--no-wait", str(logs)], capture_output=True, text=True,
                             cwd=ROOT, timeout=60, env={**worker.env})
        assert enq.returncode == 0, enq.stderr
        done = wait_for(lambda: [w for w in rq_workers(r, prefix)
                                 if (w.get("counters") or {}).get("jobs_done") == 1
                                 and w["state"] == "idle"],
                        timeout=60, message="the job counted done")
        assert done[0]["id"] == idle[0]["id"]
    finally:
        code = worker.stop()
    assert code == 0, worker.output()[-3000:]


def test_a_stop_signal_while_idle_sets_the_stop_flag_even_if_its_raise_is_swallowed(
        r: redis.Redis) -> None:
    """RQ's handler raises StopRequested when the worker is idle; inside a log call that
    raise is caught by logging (seen in CI: the worker never stopped). The flag must be set
    too, so work()'s loop stops at its next check."""
    import signal

    from rq import Queue, Worker
    from rq.exceptions import StopRequested

    from tailrace.cli.jobs import _worker_class
    from tailrace.lifecycle import ThreadRecord

    w = _worker_class(Worker, ThreadRecord("jobs", "worker"))([Queue("q", connection=r)],
                                                                connection=r)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        w.request_stop(signal.SIGTERM, None)  # (it installs RQ's force-stop handlers)
    except StopRequested:
        pass  # what logging's handleError swallows when it lands in a log call
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert w._stop_requested

"""Helpers shared by the multi-node tests: status, logs, per-node command counts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from helpers import Role, count_lines, wait_for
from redis_cluster import ClusterUnderTest

from tailrace.generate import Generator

__all__ = ["Flow", "flowing_pipeline", "status_json", "stop_all", "warnings_of",
           "xreadgroup_calls"]


def status_json(cfg: Path, url: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "tailrace", "status", "-c", str(cfg),
                          "--broker", url, "--json"], capture_output=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    doc: dict[str, Any] = orjson.loads(out.stdout)
    return doc


def xreadgroup_calls(cluster: ClusterUnderTest) -> int:
    total = 0
    for s in cluster.master_servers():
        c = s.client()
        try:
            total += int(c.info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0))
        finally:
            c.close()
    return total


def warnings_of(roles: list[Role], last: int = 12) -> str:
    """The last warnings and errors each role logged, for a failure message."""
    out = []
    for r in roles:
        lines = [ln for ln in r.output().splitlines()
                 if " WARNING " in ln or " ERROR " in ln or "Error" in ln]
        out.append(f"--- {r.role} ({len(lines)} warnings)\n" + "\n".join(lines[-last:]))
    return "\n".join(out)


def stop_all(roles: list[Role]) -> dict[str, int]:
    return {f"{r.role}-{i}": r.stop() for i, r in enumerate(roles) if r.alive}


@dataclass
class Flow:
    """A pipeline under way: generator, agent, two processors, a file sink (see below)."""

    gen: Generator
    thread: threading.Thread
    roles: list[Role]
    out: Path
    codes: dict[str, int] = field(default_factory=dict)  # exit codes, once stopped

    def delivered(self, n: int, what: str) -> None:
        wait_for(lambda: count_lines(self.out) >= n, timeout=60, interval=0.1,
                 message=f"{n:,} records {what}")

    def all_delivered(self, total: int, what: str) -> None:
        """Every generated line delivered; then a moment for a late duplicate to show."""
        self.thread.join(timeout=60)
        assert self.gen.written == total
        try:
            wait_for(lambda: count_lines(self.out) >= total, timeout=90, interval=0.25,
                     message=f"all {total} records {what}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {count_lines(self.out)} delivered\n"
                                 f"{warnings_of(self.roles)}") from None
        time.sleep(1.5)


@contextmanager
def flowing_pipeline(cfg: Path, url: str, *, files: int, total: int) -> Iterator[Flow]:
    """Lines written at 6,000/s into ``cfg``'s folder while an agent, two processors and a
    file sink run against ``url``; all stopped on exit (their exit codes in ``codes``)."""
    gen = Generator(cfg.parent / "logs", files=files, fmt="plain", rate=6_000, total=total)
    stop = threading.Event()
    thread = threading.Thread(target=gen.run, args=(stop,), daemon=True)
    roles = [Role("agent", cfg, url).start(), Role("processor", cfg, url).start(),
             Role("processor", cfg, url).start(), Role("sink", cfg, url).start()]
    flow = Flow(gen, thread, roles, cfg.parent / "out" / "all.log")
    thread.start()
    try:
        yield flow
    finally:
        stop.set()
        gen.close()
        flow.codes = stop_all(roles)

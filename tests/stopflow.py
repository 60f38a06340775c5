"""Helpers for the stop and rollout tests: signals as operators send them, a pipeline of
real role processes, and what Redis says is still pending."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from helpers import Role, count_lines, wait_for

from tailrace.generate import Generator
from tailrace.keys import Keys

__all__ = ["TARGETS", "Flow", "exit_of", "flowing", "pending", "send"]

# leader: `kill PID`; group: Ctrl-C, systemd KillMode=control-group, `kill -- -PGID`;
# both: an init or script that does the two.
TARGETS = ("leader", "group", "both")


def send(proc: subprocess.Popen[bytes], target: str, signum: int) -> None:
    """Signal a process started with ``start_new_session=True`` (its pid is its group's)."""
    if target in ("leader", "both"):
        os.kill(proc.pid, signum)
    if target in ("group", "both"):
        os.killpg(proc.pid, signum)


def exit_of(role: Role, timeout: float) -> tuple[int, float]:
    """Wait for ``role`` to exit; its exit status and how long it took. Kills it (and its
    group) and fails when it does not exit within ``timeout``."""
    assert role.proc is not None
    start = time.monotonic()
    try:
        code = role.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(role.proc.pid, signal.SIGKILL)
        role.proc.wait()
        raise AssertionError(f"{role.role} did not exit within {timeout}s:\n"
                             f"{role.output()[-3000:]}") from None
    return code, time.monotonic() - start


def pending(r: redis.Redis, keys: Keys, partitions: int, stage: str) -> dict[str, int]:
    """Entries delivered but not acknowledged, per group, over ``stage``'s streams."""
    total: dict[str, int] = {}
    for p in range(partitions):
        for g in r.xinfo_groups(keys.stream(stage, p)):
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            total[name] = total.get(name, 0) + int(g["pending"])
    return total


@dataclass
class Flow:
    """Lines being written into ``logs/`` and the role processes reading them."""

    gen: Generator
    thread: threading.Thread
    stop: threading.Event
    out: Path
    roles: list[Role] = field(default_factory=list)

    def delivered(self) -> int:
        return count_lines(self.out)

    def wait_delivered(self, n: int, what: str, timeout: float = 90) -> None:
        wait_for(lambda: self.delivered() >= n, timeout=timeout, interval=0.1,
                 message=f"{n:,} records {what} ({self.delivered():,} so far)")

    def all_written(self, timeout: float = 120) -> int:
        """Stop writing (or, with a ``total``, wait for the last line); lines written."""
        if self.gen.total is None:
            self.stop.set()
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the generator did not finish"
        return self.gen.written

    def start(self, role: str, cfg: Path, url: str, *extra: str) -> Role:
        proc = Role(role, cfg, url, *extra).start()
        self.roles.append(proc)
        return proc

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every live role (leader only) and return the exit codes."""
        return {f"{r.role}-{i}": r.stop() for i, r in enumerate(self.roles) if r.alive}


@contextmanager
def flowing(cfg: Path, *, rate: float, total: int | None = None,
            files: int = 2) -> Iterator[Flow]:
    """Write nginx lines at ``rate``/s into the folder ``cfg`` tails (see
    ``test_e2e.pipeline_config``), ``total`` of them or until :meth:`Flow.all_written`;
    every role started through the flow is killed after, if still running."""
    gen = Generator(cfg.parent / "logs", files=files, fmt="plain", rate=rate, total=total)
    stop = threading.Event()
    thread = threading.Thread(target=gen.run, args=(stop,), daemon=True)
    flow = Flow(gen, thread, stop, cfg.parent / "out" / "all.log")
    thread.start()
    try:
        yield flow
    finally:
        stop.set()
        thread.join(timeout=10)
        gen.close()
        for r in flow.roles:
            if r.alive:
                r.kill()
        _shutdown_embedded(cfg.parent / "data" / "redis" / "redis.sock")


def _shutdown_embedded(socket: Path) -> None:
    """An embedded Redis outlives a killed `run` (its own session, stop signals blocked):
    after a failed test, shut it down so it does not linger."""
    if not socket.exists():
        return
    client = redis.Redis(unix_socket_path=str(socket), socket_timeout=5)
    try:
        client.shutdown(nosave=True)
    except (redis.exceptions.RedisError, OSError):
        pass  # gone already, or it closed the connection on its way out
    finally:
        client.close()

"""Running roles as child processes: ``tailrace run`` and ``--workers N``.

Each child is ``python -m tailrace <role> ...``; a child that dies unexpectedly is
restarted with backoff (its work is safe in Redis: the new one resumes from there). On
stop every child gets SIGTERM, drains and exits; stragglers are killed after the timeout.

Children share the supervisor's process group, so a stop sent to the group (Ctrl-C,
systemd's ``KillMode=control-group``) reaches them directly as well as forwarded: they
run with :data:`~tailrace.signals.SUPERVISED_ENV` set and take every repeat as the same
stop, and the supervisor alone escalates on a second signal (:meth:`Supervisor.kill_all`).
Each child starts with the stop signals blocked (pending, not lost) until its handlers
are in place.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .logs import event
from .retry import Backoff
from .signals import SUPERVISED_ENV, blocked

__all__ = ["Child", "Supervisor"]

log = logging.getLogger(__name__)
EXIT_USAGE = 2
# A child killed by the stop signal itself (its default action) also stopped as asked.
CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)


@dataclass
class Child:
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=10.0))
    started_at: float = 0.0


class Supervisor:
    """Starts children, restarts the ones that crash, stops them all on request."""

    def __init__(self, children: list[Child], *, shutdown_timeout_s: float = 20.0,
                 env: dict[str, str] | None = None) -> None:
        self.children = children
        self.shutdown_timeout_s = shutdown_timeout_s
        # The caller may still add to ``env`` (the broker URL) before the first spawn.
        self.env = dict(os.environ) if env is None else env
        self.env[SUPERVISED_ENV] = "1"

    def _spawn(self, child: Child) -> None:
        cmd = [sys.executable, "-m", "tailrace", *child.args]
        with blocked():  # the child unblocks them once its handlers are installed
            child.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL)
        child.started_at = time.monotonic()
        event(log, logging.INFO, "supervisor_child_started",
              f"started {child.name} (pid {child.proc.pid})", child=child.name)

    def run(self, stop: threading.Event, tick: Callable[[], None] | None = None) -> int:
        """Supervise until ``stop`` is set; returns 0 after a clean stop. ``tick`` runs at
        every look at the children (e.g. keeping an embedded Redis up)."""
        for c in self.children:
            if not stop.is_set():
                self._spawn(c)
        while not stop.wait(0.2):
            if tick is not None:
                tick()
            now = time.monotonic()
            for c in self.children:
                if stop.is_set():
                    break  # a child that exited on the group's signal is not restarted
                if c.proc is not None and c.proc.poll() is not None:
                    code = c.proc.returncode
                    if code == EXIT_USAGE:
                        # A usage or config error does not heal by restarting.
                        event(log, logging.ERROR, "supervisor_child_failed",
                              f"{c.name} exited with {code} (usage or config error); stopping",
                              child=c.name, code=code)
                        c.proc = None
                        self.stop_all()
                        return EXIT_USAGE
                    if now - c.started_at > 30:
                        c.backoff.reset()
                    delay = c.backoff.next_delay()
                    event(log, logging.WARNING, "supervisor_child_exited",
                          f"{c.name} exited with {code}; restarting in {delay:.1f}s",
                          child=c.name, code=code)
                    c.proc = None
                    c.restarts += 1
                    c.next_start = now + delay
                if c.proc is None and now >= c.next_start:
                    self._spawn(c)
        return self.stop_all()

    def stop_all(self) -> int:
        """SIGTERM every child, wait for each (killing stragglers at the timeout); 0 when
        every one stopped cleanly. A child that already exited on a signal sent to the whole
        group counts with its own exit status."""
        started = [c for c in self.children if c.proc is not None]
        for c in started:
            assert c.proc is not None
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout_s
        worst = 0
        for c in started:
            assert c.proc is not None
            try:
                code = c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                event(log, logging.ERROR, "supervisor_child_killed",
                      f"{c.name} did not stop in {self.shutdown_timeout_s:.0f}s; killing it",
                      child=c.name)
                c.proc.kill()
                code = c.proc.wait()
            level = logging.INFO if code in CLEAN_EXITS else logging.ERROR
            event(log, level, "supervisor_child_stopped", f"{c.name} exited with {code}",
                  child=c.name, code=code)
            worst = worst or (code if code not in CLEAN_EXITS else 0)
        return 0 if worst == 0 else 1

    def kill_all(self) -> None:
        """SIGKILL every live child: a second stop signal exits at once, children too
        (their work in flight stays pending in Redis and is redone)."""
        for c in self.children:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.kill()
        for c in self.children:
            if c.proc is not None:
                try:
                    # With a timeout: this runs in a signal handler, maybe inside a wait()
                    # of the same child, whose lock a blocking wait() would deadlock on.
                    c.proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every live child (e.g. SIGHUP: reload)."""
        for c in self.children:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.send_signal(signum)

    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self.children
                if c.proc is not None and c.proc.poll() is None}



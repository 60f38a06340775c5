"""Running roles as child processes: ``tailrace run`` and ``--workers N``.

Each child is ``python -m tailrace <role> ...``; a child that dies unexpectedly is
restarted with backoff (its work is safe in Redis: the new one resumes from there). On
stop every child gets SIGTERM, drains and exits; stragglers are killed after the timeout.

A child with a ``main`` starts the first time as a fork of this process instead: the
imports and the validated config are already here, so the role is at work within
milliseconds instead of paying a fresh interpreter's ~0.6 s of CPU (four processes at once
on two cores were most of the time to a first line). It forks only while this process has
no other thread (a fork copies no thread, and a lock another thread held stays held in the
child); a restart, or a start after the supervisor's threads are up, runs the command line.
The forked child looks like the started one to its role: its own ``sys.argv`` (a reload
re-executes it), environment, stdin, and a process name ``tr-<child>`` (``ps``, ``pgrep``).

Children share the supervisor's process group, so a stop sent to the group (Ctrl-C,
systemd's ``KillMode=control-group``) reaches them directly as well as forwarded: they
run with :data:`~tailrace.signals.SUPERVISED_ENV` set and take every repeat as the same
stop, and the supervisor alone escalates on a second signal (:meth:`Supervisor.kill_all`).
Each child starts with the stop signals blocked (pending, not lost) until its handlers
are in place.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from .logs import event
from .retry import Backoff
from .signals import HANDLED, SUPERVISED_ENV, blocked

__all__ = ["Child", "Supervisor"]

log = logging.getLogger(__name__)
EXIT_USAGE = 2
# A child killed by the stop signal itself (its default action) also stopped as asked.
CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)


class Forked:
    """A forked child, waited for like a :class:`subprocess.Popen` (the part used here)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        # Waits with a timeout without polling; None where the kernel has no pidfd.
        self._fd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self._fd = os.pidfd_open(pid)
            except OSError:
                pass

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                pid, status = self.pid, 255 << 8
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            fd = self._fd
            if fd is None:
                time.sleep(0.01 if left is None else min(0.01, left))
                continue
            try:
                select.select([fd], [], [], left)
            except OSError:
                # A wait in a signal handler (kill_all) reaped it and closed the fd while
                # this select was interrupted; poll() says so on the next turn.
                pass
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Child:
    """One supervised process: ``args`` of ``python -m tailrace``; ``main``, when given,
    runs the same role in a fork of this process (its first start, see the module)."""

    name: str
    args: list[str]
    main: Callable[[], None] | None = None
    proc: subprocess.Popen[bytes] | Forked | None = None
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
        self._started = False

    def _spawn(self, child: Child) -> None:
        forked = (child.main is not None and child.restarts == 0
                  and threading.active_count() == 1)
        with blocked():  # the child unblocks them once its handlers are installed
            if forked:
                child.proc = self._fork(child)
            else:
                cmd = [sys.executable, "-m", "tailrace", *child.args]
                child.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL)
        child.started_at = time.monotonic()
        how = "forked" if forked else "started"
        event(log, logging.INFO, "supervisor_child_started",
              f"{how} {child.name} (pid {child.proc.pid})", child=child.name)

    def _fork(self, child: Child) -> Forked:
        # Objects made so far stay out of the children's collections, and this process's:
        # a collection writes to every page they sit on, copying the pages fork shares
        # (copy-on-write), and they are the imports and the config, which live on anyway.
        gc.freeze()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # else what is buffered here would be written by each child too
        pid = os.fork()
        if pid == 0:
            _run_forked(child, self.env)  # never returns
        return Forked(pid)

    def start(self, stop: threading.Event) -> None:
        """Start every child (unless ``stop`` is set already); :meth:`run` calls it if the
        caller did not. Call it before starting threads of your own: children with a
        ``main`` are forked only while this process has no other thread."""
        if self._started:
            return
        self._started = True
        for c in self.children:
            if not stop.is_set():
                self._spawn(c)

    def run(self, stop: threading.Event, tick: Callable[[], None] | None = None) -> int:
        """Supervise until ``stop`` is set; returns 0 after a clean stop. ``tick`` runs at
        every look at the children (e.g. keeping an embedded Redis up)."""
        self.start(stop)
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


def _run_forked(child: Child, env: dict[str, str]) -> NoReturn:
    """The forked child's life: the role's main, then an exit that never returns into the
    supervisor's frames (they would stop the embedded Redis, the children...)."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["tailrace", *child.args]
        sys.orig_argv = [sys.executable, "-m", "tailrace", *child.args]  # a reload execs it
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        _set_name(f"tr-{child.name}")
        for signum in HANDLED:  # the supervisor's handlers are not the role's
            signal.signal(signum, signal.SIG_DFL)
        assert child.main is not None
        child.main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            sys.stderr.write(f"{exc.code}\n")
    except BaseException:
        traceback.print_exc()
    finally:
        _exit(code)


def _set_name(name: str) -> None:
    """The process name ``ps`` and ``pgrep`` show (Linux; 15 bytes at most)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def _exit(code: int) -> NoReturn:
    """Exit as the interpreter does at the end of a program (threads joined, logs and
    streams flushed) without unwinding into the supervisor's frames."""
    try:
        main = threading.main_thread()
        for t in threading.enumerate():
            if t is not main and not t.daemon:
                t.join()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    finally:
        os._exit(code)

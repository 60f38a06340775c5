"""Stop signals as operators send them: to the leader, to the whole process group, or both.

Ctrl-C in a terminal, systemd's default ``KillMode=control-group`` and many inits signal
*every* process of the group at once, and a supervisor forwards the signal to its children
too, so one stop reaches a process several times within milliseconds. The rules:

- the first SIGTERM/SIGINT asks for a stop (the process drains and exits 0);
- a repeat within :data:`REPEAT_WINDOW_S` is the same stop (RQ's workers use the same
  rule); under a supervisor (:data:`SUPERVISED_ENV`) every repeat is, because the
  supervisor gets the repeat too and is the one that escalates;
- a later repeat exits at once with ``128 + signum`` (work in flight stays pending in Redis
  and is redone by the next owner).

A stop that arrives while a process starts must not kill it half-started with Python's
default ``KeyboardInterrupt``: a long-running command calls :func:`hold` first thing, which
keeps such a stop for :meth:`StopSignals.install`; and signals are blocked across a
``fork``/``exec`` of a tailrace process (:func:`blocked`: the mask survives ``exec``), so
one sent before the new image has run a line of Python stays pending until then.

:class:`ProcessStop` is the one place a long-running process's stop is put together (the
role runtime and the supervisor both use it): the event, these rules, what an exit at once
must do first (kill the children, stop an embedded Redis), the drain timeout, and the
blocked signals while it exits.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from .logs import event

__all__ = ["EXIT_DRAIN_TIMEOUT", "REPEAT_WINDOW_S", "STOP_SIGNALS", "SUPERVISED_ENV",
           "ProcessStop", "StopSignals", "block", "blocked", "hold", "unblock_stops"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REPEAT_WINDOW_S = 1.0
SUPERVISED_ENV = "TAILRACE_SUPERVISED"  # set by supervisors in their children's environment
EXIT_DRAIN_TIMEOUT = 1  # the status of a process whose drain outlasted its timeout

log = logging.getLogger(__name__)
_held: list[tuple[int, float]] = []  # stop signals received before install(), with when


def hold() -> None:
    """Keep stop signals that arrive from now until :meth:`StopSignals.install` (which acts
    on them); call it first thing in a long-running command. SIGHUP is left as it is."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda n, _f: _held.append((n, time.monotonic())))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class StopSignals:
    """SIGTERM/SIGINT (and optionally SIGHUP) handlers of one process.

    Args:
        on_stop: called once, in the main thread, on the first stop signal.
        on_force: called before exiting on a second stop signal (e.g. kill children).
        on_hup: called on SIGHUP (from the signal handler: keep it short).
        name: the role, for the log line.
    """

    def __init__(self, on_stop: Callable[[int], None], *,
                 on_force: Callable[[int], None] | None = None,
                 on_hup: Callable[[], None] | None = None, name: str = "") -> None:
        self.on_stop = on_stop
        self.on_force = on_force
        self.on_hup = on_hup
        self.name = name
        self.supervised = bool(os.environ.get(SUPERVISED_ENV))
        self.first_at: float | None = None
        self.installed = False  # this process's handlers (a role process, not a test thread)

    def install(self) -> None:
        """Install the handlers (main thread only), then deliver what was held pending."""
        if threading.current_thread() is not threading.main_thread():
            return
        self.installed = True
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, self._on_signal)
        if self.on_hup is not None:
            hup = self.on_hup
            signal.signal(signal.SIGHUP, lambda _s, _f: hup())
        held, _held[:] = list(_held), []
        for signum, at in held:
            self._receive(signum, at)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED if self.on_hup else STOP_SIGNALS)

    @property
    def requested(self) -> bool:
        return self.first_at is not None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._receive(signum, time.monotonic())

    def _receive(self, signum: int, now: float) -> None:
        if self.first_at is None:
            self.first_at = now
            again = "" if self.supervised else " (again, a second later, to exit at once)"
            event(log, logging.INFO, "runtime_stop_requested",
                  f"{signal.Signals(signum).name} received: draining{again}", role=self.name)
            self.on_stop(signum)
            return
        if self.supervised or now - self.first_at < REPEAT_WINDOW_S:
            return  # the same stop, delivered again (group + leader, or forwarded)
        event(log, logging.WARNING, "runtime_exit_now",
              f"{signal.Signals(signum).name} received again: exiting now (work in flight "
              "stays pending in Redis and is redone)", role=self.name)
        if self.on_force is not None:
            self.on_force(signum)
        os._exit(128 + signum)


class ProcessStop:
    """The stop of one long-running process (a role, a supervisor): the event its loops
    watch, the signals that set it (the rules of :class:`StopSignals`), what an exit at once
    must do first, and the exit.

    Args:
        name: the role, for the log lines.
        on_force: called before exiting at once (a later repeat of the stop, or a drain
            past ``drain_timeout_s``): stop what must not outlive this process (children,
            an embedded Redis it owns).
        on_hup: called on SIGHUP, from the signal handler (keep it short).
        drain_timeout_s: a stop not done within it exits at once with
            :data:`EXIT_DRAIN_TIMEOUT`; ``None``: the caller bounds its own drain.
    """

    def __init__(self, name: str, *, on_force: Callable[[int], None] | None = None,
                 on_hup: Callable[[], None] | None = None,
                 drain_timeout_s: float | None = None) -> None:
        self.name = name
        self.event = threading.Event()
        self.drain_timeout_s = drain_timeout_s
        self._on_force = on_force
        self.signals = StopSignals(lambda _s: self.request(), on_force=on_force,
                                   on_hup=on_hup, name=name)

    def install(self) -> None:
        """Take the stop signals (main thread only; elsewhere, e.g. a test, it does nothing)."""
        self.signals.install()

    @property
    def by_signal(self) -> bool:
        """Whether a stop signal was received (not only a stop asked for in the code)."""
        return self.signals.requested

    def request(self) -> None:
        """Set the event (once); the drain is cut short after ``drain_timeout_s``."""
        if self.event.is_set():
            return
        self.event.set()
        timeout = self.drain_timeout_s
        if timeout is None:
            return

        def cut() -> None:
            event(log, logging.ERROR, "runtime_drain_timeout",
                  f"did not drain within shutdown_timeout_s={timeout}; exiting now (work in "
                  "flight stays pending in Redis and is redone)", role=self.name)
            if self._on_force is not None:
                self._on_force(signal.SIGTERM)
            os._exit(EXIT_DRAIN_TIMEOUT)

        timer = threading.Timer(timeout, cut)
        timer.daemon = True
        timer.start()

    def exiting(self) -> None:
        """Drained and about to exit (or re-execute): a late repeat of the stop (forwarded,
        or the group's) must not end the process with the default action once Python's
        finalization has reset the handlers (status -15 instead of 0), nor reach a new
        image before its handlers are in. Blocked, it stays pending and dies with us."""
        if self.signals.installed:
            block()


def block() -> None:
    """Hold SIGTERM, SIGINT and SIGHUP pending in this thread (and what it execs)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)


def unblock_stops() -> None:
    """Let SIGTERM and SIGINT through again in this thread (SIGHUP stays as it is)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextmanager
def blocked() -> Iterator[None]:
    """Block the handled signals around a spawn: the child starts with them pending-only and
    unblocks them once its handlers are installed; this thread gets its own after."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

"""Supervising role processes on this machine: ``tailrace run`` and ``--workers N``.

:func:`supervise` starts the embedded Redis when no broker is set, runs the children
(tailrace.supervise: forked from this process at their first start, with the config it
loaded), serves ``service.http`` for all of them, forwards a reload, and keeps the embedded
Redis up. :func:`role_child` makes a child that runs a role's main (cli/roles.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import redis

from ..broker import connect
from ..config import Config, load_config
from ..embedded import EmbeddedRedis
from ..errors import BrokerUnavailable, ConfigError
from ..keys import Keys
from ..logs import event
from ..runtime import NO_HTTP_ENV, broker_url
from ..signals import ProcessStop, hold
from ..supervise import Child, Supervisor
from .common import child_env, init_logging, run_role
from .supervisor_http import children_records

__all__ = ["role_child", "supervise", "supervised"]

log = logging.getLogger(__name__)


def role_child(name: str, role: str, config: Config, log_level: str | None,
               log_format: str | None, main: Callable[[], None], *extra: str) -> Child:
    """A child running ``tailrace <role> -c <config> <extra>``: forked with the config
    loaded here at its first start (``main``), from its command line after."""
    args = [role, "-c", config.file, *_log_args(log_level, log_format), *extra]

    def forked() -> None:
        hold()  # as the command does first thing (the signals are blocked until then)
        init_logging(config, role, log_level, log_format)
        run_role(main)

    return Child(name, args, main=forked)


def _log_args(log_level: str | None, log_format: str | None) -> list[str]:
    args = []
    if log_level:
        args += ["--log-level", log_level]
    if log_format:
        args += ["--log-format", log_format]
    return args


def supervise(config: Config, broker: str | None, children: list[Child],
              early: EmbeddedRedis | None = None) -> int:
    """Run children against ``broker`` (or an embedded server started here).

    SIGHUP validates the config and, when it is valid, forwards the signal: every child
    drains and re-executes itself with the new config. The children do not serve
    ``service.http``; this process serves it for all of them.

    Args:
        early: an embedded server launched before the config was validated (cli/run.py):
            kept when it is the one the config wants (the children fork once it answers),
            else stopped.

    Raises:
        BrokerUnavailable: the embedded Redis did not start (the children were stopped,
            or, for a server launched early, never started).
    """
    env = child_env(None)
    env[NO_HTTP_ENV] = "1"
    sup = Supervisor(children, shutdown_timeout_s=config.service.shutdown_timeout_s, env=env)

    def on_hup() -> None:
        try:
            load_config(config.file, config.registry)
        except ConfigError as exc:
            event(log, logging.ERROR, "supervisor_reload_rejected",
                  f"config {config.file} is invalid; children keep the running one:\n{exc}")
            return
        sup.signal_all(signal.SIGHUP)

    embedded: EmbeddedRedis | None = None

    def on_force(_signum: int) -> None:
        sup.kill_all()
        if embedded is not None:
            embedded.terminate()  # in a session of its own: the group's signals miss it

    # No drain timeout of its own: stop_all kills the children that outlast theirs.
    stopping = ProcessStop("supervisor", on_force=on_force,
                           on_hup=lambda: threading.Thread(target=on_hup).start())
    stopping.install()
    stop = stopping.event
    url = broker_url(config, broker)
    wanted = EmbeddedRedis(config.data_dir, config.service.embedded.appendfsync)
    if early is not None and (url is not None or (early.dir, early.appendfsync)
                              != (wanted.dir, wanted.appendfsync)):
        early.stop()  # a broker after all, or another server: the validated config decides
        early = None
    gate: _Gate | None = None
    if url is None:
        embedded = early or wanted
        url = embedded.url  # known before it answers
        if not embedded.spawned:
            gate = _Gate(children)
    env["TAILRACE_BROKER"] = url
    failed: list[BrokerUnavailable] = []
    starting: threading.Thread | None = None
    http = None
    clients: list[redis.Redis] = []

    def client() -> redis.Redis:
        if not clients:
            clients.append(connect(url, name="tailrace-supervisor"))
        return clients[0]

    try:
        if embedded is not None and embedded.spawned:
            # Launched before the imports, it has booted by now (or nearly): the children
            # fork once it answers, and the lock it holds until then is not theirs to keep.
            embedded.start()
        sup.start(stop)  # first: the children fork while this process has no other thread
        if embedded is not None and gate is not None:
            starting = _start_embedded(embedded, gate, failed, stop)
        if config.service.http:
            from ..httpserver import StatusServer  # ~10 MiB: only with the endpoint on

            keys = Keys(config.service.prefix)
            http = StatusServer(
                config.service.http, children_records(client, keys, sup.pids),
                max_errors_per_min=config.service.health_max_errors_per_min,
            ).start()
        code = sup.run(stop, tick=None if embedded is None else _keep_up(embedded, starting))
        if failed:
            raise failed[0]
        return code
    finally:
        if http is not None:
            http.stop()
        for c in clients:
            c.close()
        if starting is not None:
            starting.join()
        if gate is not None:
            gate.open()
        if embedded is not None:
            embedded.stop()
        stopping.exiting()


class _Gate:
    """Holds the forked children of ``supervise`` until the embedded Redis answers: it
    starts (~20-50 ms) while they set up instead of before they fork, and they connect at
    once instead of failing and backing off. A pipe: each child waits for its end of file,
    which comes when this process closes the write end (Redis answers, or failed: then the
    children are stopped anyway)."""

    def __init__(self, children: list[Child]) -> None:
        self._r, self._w = os.pipe()
        for c in children:
            if c.main is not None:
                c.main = self._held(c.main)

    def _held(self, main: Callable[[], None]) -> Callable[[], None]:
        r, w = self._r, self._w

        def held() -> None:
            os.close(w)  # the child's copy: else the end of file never comes
            os.read(r, 1)  # stop signals stay pending meanwhile (blocked until main's hold)
            os.close(r)
            main()

        return held

    def open(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass  # closed already
        self._r = self._w = -1


def _start_embedded(embedded: EmbeddedRedis, gate: _Gate, failed: list[BrokerUnavailable],
                    stop: threading.Event) -> threading.Thread:
    def start() -> None:
        try:
            embedded.start()
        except BrokerUnavailable as exc:
            failed.append(exc)
            stop.set()  # the children drain and stop; the error is raised by supervise
        finally:
            gate.open()

    thread = threading.Thread(target=start, name="embedded-redis", daemon=True)
    thread.start()
    return thread


def _keep_up(embedded: EmbeddedRedis,
             starting: threading.Thread | None) -> Callable[[], None]:
    """Restart the embedded Redis when it dies (killed, out of memory): the children wait
    out the outage and resume; its append-only file keeps what they committed."""
    down = [False]
    next_try = [0.0]

    def tick() -> None:
        if starting is not None and starting.is_alive():
            return  # still coming up: a failure there stops everything (supervise)
        if not down[0]:
            code = embedded.exited()
            if code is None:
                return
            down[0] = True
            event(log, logging.ERROR, "supervisor_redis_exited",
                  f"the embedded Redis exited with {code}; restarting it (see "
                  f"{embedded.dir / 'redis.log'})")
        if time.monotonic() < next_try[0]:
            return
        try:
            embedded.proc = None
            embedded.start()
            down[0] = False
        except BrokerUnavailable as exc:
            next_try[0] = time.monotonic() + 5.0
            event(log, logging.ERROR, "supervisor_redis_restart_error",
                  f"{exc}; trying again in 5 s")

    return tick


def supervised(config: Config, broker: str | None, children: list[Child],
               early: EmbeddedRedis | None = None) -> None:
    """:func:`supervise` as a command ends: its status, or the error said plainly."""
    run_role(lambda: sys.exit(supervise(config, broker, children, early)))

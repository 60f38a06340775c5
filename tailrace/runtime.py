"""What every long-running role process sets up: broker connection, signals, lifecycle,
the HTTP endpoint, and reload.

A role (agent, processor, sink) builds a :class:`Runtime` from its config. It resolves the
broker (``--broker`` / ``TAILRACE_BROKER`` / ``service.broker`` / embedded), waits for it
with backoff, creates the pipeline's groups, publishes the lifecycle record, serves
``service.http``, and turns signals into actions:

- SIGTERM/SIGINT: stop (the role drains, commits, releases its leases); the same stop
  delivered again (to the leader and its group, or forwarded by a supervisor) is one stop,
  a second one later exits at once (:mod:`tailrace.signals`), and a drain longer than
  ``shutdown_timeout_s`` is cut short. Either way nothing is corrupted: uncommitted work
  stays pending in Redis and is redone.
- SIGHUP, or ``tailrace reload`` (a generation counter in Redis): re-read the config; if it
  is valid, drain like a stop and re-execute the same command line in place (same pid), so
  the new config takes effect with no line lost or repeated; if not, log every problem and
  keep running the old one.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from .httpserver import StatusServer

from .allocator import keep_batch_memory
from .broker import (
    BROKER_ERRORS,
    connect,
    ensure_groups,
    ensure_partition_count,
    redact_url,
)
from .config import Config, carry_config_text, parse_config, read_config_text
from .embedded import EmbeddedRedis
from .errors import ConfigError, StopRequested
from .keys import Keys, sink_group
from .lifecycle import Lifecycle, Publisher, State
from .logs import event
from .retry import Backoff
from .scriptcalls import WaitPolicy
from .signals import ProcessStop, block
from .topology import set_min_replicas

__all__ = ["NO_HTTP_ENV", "Runtime", "broker_url"]

log = logging.getLogger(__name__)
BROKER_ENV = "TAILRACE_BROKER"
NO_HTTP_ENV = "TAILRACE_NO_HTTP"  # set by supervisors: the parent serves service.http
ADOPT_ENV = "TAILRACE_ADOPT_REDIS"  # a reloaded process keeps owning its embedded Redis
# The reload generation a reloading process had seen: a `tailrace reload` issued while it
# re-executes (before it reads the generation again) is then noticed, not taken as the base.
RELOAD_GEN_ENV = "TAILRACE_RELOAD_GEN"
RELOAD_POLL_S = 1.0


def broker_url(config: Config, override: str | None = None) -> str | None:
    """The broker URL to use, or ``None`` for the embedded server."""
    return override or os.environ.get(BROKER_ENV) or config.service.broker


class Runtime:
    """Process-level plumbing shared by every role.

    Args:
        config: the validated config.
        role: ``agent``, ``processor`` or ``sink``.
        broker: a URL overriding the config (the ``--broker`` option).
    """

    def __init__(self, config: Config, role: str, *, broker: str | None = None,
                 worker_id: str | None = None) -> None:
        self.config = config
        keep_batch_memory()  # batch buffers reused, not mapped afresh each batch
        self.keys = Keys(config.service.prefix)
        self.lifecycle = Lifecycle(role, worker_id)
        self._hup = threading.Event()
        self.stopping = ProcessStop(role, on_force=self._on_force, on_hup=self._hup.set,
                                    drain_timeout_s=config.service.shutdown_timeout_s)
        self.stop = self.stopping.event
        self.reloading = False
        self._reload_text: str | None = None  # the config text a reload validated
        self.embedded: EmbeddedRedis | None = None
        url = broker_url(config, broker)
        if url is None:
            self.embedded = EmbeddedRedis(config.data_dir, config.service.embedded.appendfsync)
        self.url = url
        self.client: redis.Redis | None = None
        self.wait_policy = WaitPolicy()
        self.publisher: Publisher | None = None
        self.http: StatusServer | None = None
        self._reload_gen: Any = None

    # -- signals ------------------------------------------------------------------------
    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, a later second one exits at once; SIGHUP reloads."""
        if threading.current_thread() is not threading.main_thread():
            return
        self.stopping.install()
        threading.Thread(target=self._watch_reload, name="reload-watch", daemon=True).start()

    def _on_force(self, _signum: int) -> None:
        # Exiting at once must not leave an embedded server we own running on its own.
        if self.embedded is not None:
            self.embedded.terminate()

    def request_stop(self) -> None:
        """Stop draining; cut the drain short after ``shutdown_timeout_s``."""
        self.stopping.request()

    def _watch_reload(self) -> None:
        while not self.stop.is_set():
            asked = self._hup.wait(RELOAD_POLL_S)
            self._hup.clear()
            if not asked and not self._reload_published():
                continue
            self._try_reload()

    def _reload_published(self) -> bool:
        client = self.client
        if client is None:
            return False
        try:
            gen = client.get(self.keys.reload())
        except BROKER_ERRORS:
            return False
        if self._reload_gen is None:
            self._reload_gen = gen or b"0"
            return False
        if (gen or b"0") != self._reload_gen:
            self._reload_gen = gen or b"0"
            return True
        return False

    def _try_reload(self) -> None:
        try:
            text = read_config_text(self.config.file)
            parse_config(text, str(self.config.file), self.config.registry)
        except ConfigError as exc:
            event(log, logging.ERROR, "runtime_reload_rejected",
                  f"config {self.config.file} is invalid; keeping the running one:\n{exc}",
                  role=self.lifecycle.role)
            return
        event(log, logging.INFO, "runtime_reload",
              f"config {self.config.file} is valid: draining and restarting with it",
              role=self.lifecycle.role)
        self._reload_text = text
        self.reloading = True
        self.request_stop()

    # -- broker -------------------------------------------------------------------------
    def connect(self) -> redis.Redis:
        """Connect (starting the embedded server if needed), waiting out a broker outage."""
        self._start_http()
        if self.embedded is not None:
            self.embedded.start(adopt=os.environ.pop(ADOPT_ENV, None))
            self.url = self.embedded.url
        assert self.url is not None
        client: redis.Redis | None = None
        rec = self.lifecycle.thread("main", housekeeping=True)
        backoff = Backoff()
        service = self.config.service
        replication = service.replication
        outputs = [sink_group(o.id) for o in self.config.outputs]
        while not self.stop.is_set():
            try:
                if client is None:  # a cluster client needs a node to answer to be built
                    client = connect(self.url, name=f"tailrace-{self.lifecycle.role}")
                client.ping()
                ensure_partition_count(client, self.keys, service.partitions)
                ensure_groups(client, self.keys, service.partitions, outputs)
                if replication.min_replicas_to_write:
                    nodes = set_min_replicas(client, replication.min_replicas_to_write,
                                             replication.min_replicas_max_lag_s)
                    event(log, logging.INFO, "runtime_min_replicas_set",
                          f"min-replicas-to-write {replication.min_replicas_to_write} on "
                          f"{', '.join(nodes)}", role=self.lifecycle.role)
                carried = os.environ.pop(RELOAD_GEN_ENV, None)
                self._reload_gen = (carried.encode() if carried is not None
                                    else client.get(self.keys.reload()) or b"0")
                break
            except BROKER_ERRORS as exc:
                rec.set_state(State.BROKER_DOWN, f"{redact_url(self.url)}: {exc}")
                event(log, logging.WARNING, "runtime_broker_unreachable",
                      f"cannot reach the broker at {redact_url(self.url)}: {exc}; retrying",
                      role=self.lifecycle.role)
                self.stop.wait(backoff.next_delay())
        else:
            # The loop ended without a break: asked to stop before the broker answered.
            raise StopRequested(f"stopped before the broker at {redact_url(self.url)} answered")
        assert client is not None
        rec.set_state(State.ACTIVE)
        self.client = client
        self.wait_policy = WaitPolicy(replication.wait_replicas, replication.wait_timeout_ms)
        self.publisher = Publisher(self.lifecycle, client, self.keys.worker(self.lifecycle.id),
                                   service.publish_interval_s)
        self.publisher.start()
        return client

    def _start_http(self) -> None:
        address = self.config.service.http
        if not address or os.environ.get(NO_HTTP_ENV) or self.http is not None:
            return
        # Imported here: prometheus-client costs ~10 MiB, paid only with the endpoint on.
        from .httpserver import StatusServer

        try:
            self.http = StatusServer(
                address, lambda: [self.lifecycle.snapshot()],
                max_errors_per_min=self.config.service.health_max_errors_per_min,
            ).start()
        except OSError as exc:
            event(log, logging.ERROR, "http_bind_error",
                  f"cannot serve service.http on {address}: {exc.strerror}; continuing without "
                  "the endpoint (is another process using the port?)")

    def close(self) -> None:
        """Publish the final state, close the client, stop an embedded server we started.

        When a reload was requested, re-execute the same command line in place instead of
        returning.
        """
        self.lifecycle.thread("main", housekeeping=True).set_state(State.STOPPED)
        # Every thread is done by now: the last record says "stopped" (an output's record
        # kept its "idle", so a stopped sink showed idle until its record expired).
        for rec in list(self.lifecycle.threads.values()):
            if rec.state != State.FAILED:
                rec.set_state(State.STOPPED)
        if self.publisher is not None:
            self.publisher.stop(final=True)
        if self.client is not None:
            self.client.close()
        if self.http is not None:
            self.http.stop()
        if self.reloading and not self.stopping.by_signal:  # a stop signal: exit instead
            env = dict(os.environ)
            if self.embedded is not None and self.embedded.owned_pid:
                env[ADOPT_ENV] = str(self.embedded.owned_pid)
            if isinstance(self._reload_gen, bytes):
                env[RELOAD_GEN_ENV] = self._reload_gen.decode()
            if self._reload_text is not None:  # what was validated, not what is there now
                carry_config_text(self._reload_text, env)
            logging.shutdown()
            block()  # a stop arriving while the new image starts waits for its handlers
            os.execve(sys.executable, _reexec_argv(), env)
        if self.embedded is not None:
            self.embedded.stop()
        self.stopping.exiting()

    def status_records(self) -> list[dict[str, Any]]:
        return [self.lifecycle.snapshot()]


def _reexec_argv() -> list[str]:
    argv = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    argv[0] = sys.executable
    return argv

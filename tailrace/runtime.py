"""What every long-running role process sets up: broker connection, signals, lifecycle.

A role (agent, processor, sink) builds a :class:`Runtime` from its config, which resolves
the broker (``--broker`` / ``TAILRACE_BROKER`` / ``service.broker`` / embedded), waits for
it with backoff, creates the pipeline's groups, publishes the lifecycle record and turns
SIGTERM/SIGINT into a stop event (a second signal exits at once).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import redis

from .broker import BROKER_ERRORS, connect, ensure_groups, ensure_partition_count, redact_url
from .config import Config
from .embedded import EmbeddedRedis
from .errors import BrokerUnavailable
from .keys import Keys, sink_group
from .lifecycle import Lifecycle, Publisher
from .logs import event
from .retry import Backoff

__all__ = ["Runtime", "broker_url"]

log = logging.getLogger(__name__)
BROKER_ENV = "TAILRACE_BROKER"


def broker_url(config: Config, override: str | None = None) -> str | None:
    """The broker URL to use, or ``None`` for the embedded server."""
    return override or os.environ.get(BROKER_ENV) or config.service.broker


class Runtime:
    """Process-level plumbing shared by every role."""

    def __init__(self, config: Config, role: str, *, broker: str | None = None,
                 worker_id: str | None = None) -> None:
        self.config = config
        self.keys = Keys(config.service.prefix)
        self.lifecycle = Lifecycle(role, worker_id)
        self.stop = threading.Event()
        self.embedded: EmbeddedRedis | None = None
        url = broker_url(config, broker)
        if url is None:
            self.embedded = EmbeddedRedis(config.data_dir, config.service.embedded.appendfsync)
        self.url = url
        self.client: redis.Redis | None = None
        self.publisher: Publisher | None = None
        self._signals = 0

    # -- signals ------------------------------------------------------------------------
    def install_signals(self) -> None:
        """SIGTERM/SIGINT: stop cleanly; a second one exits at once (state is in Redis)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals > 1:
                os._exit(128 + signum)
            event(log, logging.INFO, "runtime_stop_requested",
                  f"{signal.Signals(signum).name} received: draining (again to exit at once)",
                  role=self.lifecycle.role)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- broker -------------------------------------------------------------------------
    def connect(self) -> redis.Redis:
        """Connect (starting the embedded server if needed), waiting out a broker outage."""
        if self.embedded is not None:
            self.embedded.start()
            self.url = self.embedded.url
        assert self.url is not None
        client = connect(self.url, name=f"tailrace-{self.lifecycle.role}")
        rec = self.lifecycle.thread("main")
        backoff = Backoff()
        service = self.config.service
        outputs = [sink_group(o.id) for o in self.config.outputs]
        while not self.stop.is_set():
            try:
                client.ping()
                ensure_partition_count(client, self.keys, service.partitions)
                ensure_groups(client, self.keys, service.partitions, outputs)
                break
            except BROKER_ERRORS as exc:
                if isinstance(exc, BrokerUnavailable) and "partitions" in str(exc):
                    raise
                rec.set_state("broker_down", f"{redact_url(self.url)}: {exc}")
                event(log, logging.WARNING, "runtime_broker_unreachable",
                      f"cannot reach the broker at {redact_url(self.url)}: {exc}; retrying",
                      role=self.lifecycle.role)
                self.stop.wait(backoff.next_delay())
        rec.set_state("active")
        self.client = client
        self.publisher = Publisher(self.lifecycle, client, self.keys.worker(self.lifecycle.id),
                                   service.publish_interval_s)
        self.publisher.start()
        return client

    def close(self) -> None:
        """Publish the final state, close the client, stop an embedded server we started."""
        self.lifecycle.thread("main").set_state("stopped")
        if self.publisher is not None:
            self.publisher.stop(final=True)
        if self.client is not None:
            self.client.close()
        if self.embedded is not None:
            self.embedded.stop()

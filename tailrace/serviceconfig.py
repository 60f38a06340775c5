"""The `service:` section of the config: broker, partitions, leases, backlog, replication.

These are the settings every role reads before it touches a plugin (``Config.service``);
they are plain options models with their defaults, apart from the pipeline's plugins and
their registry, which ``tailrace.config`` puts together around them.
"""

from __future__ import annotations

import socket
from typing import Any, Literal

from pydantic import Field, field_validator

from .brokerurl import join_broker_urls, parse_broker_url
from .options import ByteSize, Options

__all__ = ["BacklogConfig", "EmbeddedConfig", "ReplicationConfig", "ServiceConfig"]

DEFAULT_PARTITIONS = 8
DEFAULT_LEASE_TTL_MS = 6000
DEFAULT_HEARTBEAT_MS = 1000
DEFAULT_BACKLOG_ENTRIES = 512
DEFAULT_SHUTDOWN_TIMEOUT_S = 20.0
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_PUBLISH_INTERVAL_S = 5.0


class EmbeddedConfig(Options):
    """The embedded redis-server used when `service.broker` is not set."""

    appendfsync: Literal["always", "everysec", "no"] = Field(
        "everysec",
        description="AOF fsync policy: `always` loses nothing on a power cut, "
        "`everysec` may lose the last second.",
    )


class BacklogConfig(Options):
    """Backpressure limits: above them producers stop and wait (files are the buffer)."""

    max_entries_per_partition: int = Field(
        DEFAULT_BACKLOG_ENTRIES,
        ge=0,
        description="Unacknowledged batches per partition and stream before producers wait "
        "(0 = no limit).",
    )
    max_redis_memory: ByteSize = Field(
        0,
        description="Redis `used_memory` above which agents stop reading "
        "(0 = 90% of Redis `maxmemory` when set, else no limit).",
    )


class ReplicationConfig(Options):
    """How far commits wait for Redis replicas (Sentinel or Cluster deployments).

    Redis replicates asynchronously: a failover may lose the last writes the old master had
    not sent yet. These options narrow that window; docs/scaling.md measures what each costs
    and what a failover still loses.
    """

    wait_replicas: int = Field(
        0, ge=0,
        description="After every commit (an agent's batch of PRODUCE calls, a processor's or "
        "sink's COMMIT), `WAIT` until this many replicas have it; fewer within "
        "`wait_timeout_ms` and the worker treats the broker as down and retries "
        "(idempotently). 0 = asynchronous replication.",
    )
    wait_timeout_ms: int = Field(
        1000, ge=1, description="How long one `WAIT` may take.",
    )
    min_replicas_to_write: int = Field(
        0, ge=0,
        description="Set Redis `min-replicas-to-write` to this on every node at start "
        "(`CONFIG SET`; masters then refuse writes while fewer replicas are in sync, and "
        "tailrace retries). 0 = leave the servers' own setting.",
    )
    min_replicas_max_lag_s: int = Field(
        10, ge=1,
        description="Redis `min-replicas-max-lag` set with `min_replicas_to_write`: a "
        "replica counts while its last ack is at most this old.",
    )


class ServiceConfig(Options):
    """The `service:` section."""

    broker: str | None = Field(
        None,
        description="Redis URL: `redis://`, `rediss://`, `unix://` (one server), "
        "`redis+cluster://host:port,host:port` (Redis Cluster, any nodes as seeds), "
        "`redis+sentinel://host:port,host:port/SERVICE` (Sentinel); user:password allowed. "
        "A list of cluster or sentinel URLs is joined into one. "
        "Not set: an embedded redis-server in `data_dir`.",
        json_schema_extra={"anyOf": [{"type": "string"}, {"type": "null"},
                                     {"type": "array", "items": {"type": "string"}}]},
    )
    data_dir: str = Field("./.tailrace", description="Local state: checkpoints, embedded Redis.")
    partitions: int = Field(DEFAULT_PARTITIONS, ge=1, le=4096, description="Stream partitions.")
    prefix: str = Field(
        "tr", pattern=r"^[A-Za-z0-9_.-]+$", description="Prefix of every Redis key."
    )
    http: str | None = Field(
        None,
        pattern=r"^[^:]*:\d+$",
        description="`host:port` for /health, /metrics, /api/v1/status (off when unset).",
    )
    agent_id: str | None = Field(
        None, description="Identity of this node's agent (default: the host name)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
    log_format: Literal["text", "json"] = Field("text")
    lease_ttl_ms: int = Field(
        DEFAULT_LEASE_TTL_MS, ge=500, description="Partition lease lifetime; renewed at 1/3."
    )
    heartbeat_ms: int = Field(
        DEFAULT_HEARTBEAT_MS, ge=100, description="Membership heartbeat and rebalance period."
    )
    publish_interval_s: float = Field(
        DEFAULT_PUBLISH_INTERVAL_S, gt=0, description="How often workers publish their state."
    )
    shutdown_timeout_s: float = Field(
        DEFAULT_SHUTDOWN_TIMEOUT_S, gt=0, description="Time to drain on SIGTERM."
    )
    max_deliveries: int = Field(
        DEFAULT_MAX_DELIVERIES,
        ge=1,
        description="An entry delivered more often (it keeps killing workers) is dead-lettered.",
    )
    health_max_errors_per_min: int = Field(
        100, ge=0, description="/health answers 503 when a process logs more errors than this "
        "in a minute (0 = never for errors alone).",
    )
    processor_helpers: int = Field(
        0, ge=0, le=64,
        description="Helper processes each processor worker forks to handle the entries of "
        "one read side by side (0 = handle them in the worker). A partition is one worker's "
        "at a time and one file's lines share a partition, so on a node with spare cores "
        "this is what lets one busy file use more than one core.",
    )
    dlq_max_entries: int = Field(
        0, ge=0, description="Cap per dead-letter stream (0 = keep all; `tailrace dlq purge`)."
    )
    backlog: BacklogConfig = Field(default_factory=lambda: BacklogConfig())
    embedded: EmbeddedConfig = Field(default_factory=lambda: EmbeddedConfig())
    replication: ReplicationConfig = Field(default_factory=lambda: ReplicationConfig())

    @field_validator("broker", mode="before")
    @classmethod
    def _broker_url(cls, value: Any) -> Any:
        """A list of seed URLs becomes one; the URL's form is checked here, not at connect."""
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ValueError("expected a URL or a list of URLs")
            value = join_broker_urls(value)
        if isinstance(value, str) and "${" not in value:
            parse_broker_url(value)
        return value

    @property
    def agent_name(self) -> str:
        return self.agent_id or socket.gethostname()

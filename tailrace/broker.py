"""Broker access: one Redis client built from config, the registered scripts, groups.

Connections are explicit: :func:`connect` builds a client that is passed down; nothing
here is a module-level global. Script wrappers turn return codes into typed results and
exceptions; those that may run in a pipeline accept ``client=``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.commands.core import Script

from . import scripts
from .errors import BrokerUnavailable, Fenced
from .keys import Keys

__all__ = [
    "BROKER_ERRORS",
    "DeadLetter",
    "ProduceResult",
    "Scripts",
    "connect",
    "ensure_groups",
    "ensure_partition_count",
    "redact_url",
]

# What a broken or restarting broker raises; every loop retries these with backoff.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    BrokerUnavailable,
    ConnectionError,
)

DEFAULT_SOCKET_TIMEOUT_S = 15.0  # must exceed the longest XREADGROUP BLOCK
DEFAULT_CONNECT_TIMEOUT_S = 5.0


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and status."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"


def connect(url: str, *, name: str = "tailrace") -> redis.Redis:
    """A client for ``redis://``, ``rediss://`` or ``unix://`` URLs (user/password allowed).

    hiredis parses replies when installed. The client keeps raw bytes (no decoding): batch
    payloads are binary.
    """
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=DEFAULT_SOCKET_TIMEOUT_S,
            socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT_S,
            health_check_interval=30,
            client_name=name,
            decode_responses=False,
        )
    except ValueError as exc:
        raise BrokerUnavailable(f"invalid broker URL {redact_url(url)!r}: {exc}") from exc


def ensure_partition_count(client: redis.Redis, keys: Keys, partitions: int) -> None:
    """Record the partition count, or refuse a config that changed it.

    Changing the count would silently re-route files to other partitions (and break the
    per-file offset check), so a mismatch is an error that tells the operator what to do.
    """
    client.hsetnx(keys.meta(), "partitions", partitions)
    stored = int(client.hget(keys.meta(), "partitions") or partitions)
    if stored != partitions:
        raise BrokerUnavailable(
            f"this pipeline (prefix {keys.prefix!r}) was created with {stored} partitions but "
            f"the config says {partitions}; changing the count of a running pipeline is not "
            f"supported: set service.partitions back to {stored}, or drain the pipeline and "
            f"start a new one under another service.prefix"
        )


def ensure_groups(
    client: redis.Redis, keys: Keys, partitions: int, sink_groups: Iterable[str]
) -> None:
    """Create every consumer group of the pipeline (idempotent).

    All groups exist from the start, so trimming never drops entries a group that has not
    started yet would still need: ``processors`` on ``raw`` and one group per output on
    ``out``.
    """
    from .keys import PROCESSORS_GROUP

    wanted = [("raw", PROCESSORS_GROUP)] + [("out", g) for g in sink_groups]
    pipe = client.pipeline(transaction=False)
    for p in range(partitions):
        for stage, group in wanted:
            pipe.xgroup_create(keys.stream(stage, p), group, id="0", mkstream=True)
    for result in pipe.execute(raise_on_error=False):
        if isinstance(result, redis.exceptions.ResponseError) and "BUSYGROUP" not in str(result):
            raise result


@dataclass(frozen=True, slots=True)
class ProduceResult:
    """Outcome of one idempotent-producer call.

    ``status`` is ``ok`` (appended; offset moved to the batch end), ``conflict`` (the stored
    offset is ``offset``: resume there) or ``backpressure`` (backlog is ``backlog`` entries).
    """

    status: str
    entry_id: str = ""
    offset: int = 0
    backlog: int = 0

    @staticmethod
    def parse(raw: Sequence[Any]) -> ProduceResult:
        code, value = int(raw[0]), raw[1]
        text = value.decode() if isinstance(value, bytes) else str(value)
        if code == scripts.CODE_OK:
            return ProduceResult("ok", entry_id=text)
        if code == scripts.CODE_CONFLICT:
            return ProduceResult("conflict", offset=int(text))
        return ProduceResult("backpressure", backlog=int(text))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-letter entry: the payload that failed and why."""

    kind: str  # "raw" (a raw batch) or "records" (a processed batch or some of its records)
    payload: bytes
    stage: str  # "processor" or the sink group
    plugin: str
    error: str
    source: str  # stream entry id it came from

    def fields(self, now_ms: int) -> list[Any]:
        return [self.kind, self.payload, self.stage, self.plugin, self.error, self.source, now_ms]


class _Runner(Protocol):
    def __call__(self, keys: list[str], args: list[Any], client: Any = None) -> Any: ...


class Scripts:
    """The Lua scripts of :mod:`tailrace.scripts`, registered once on ``client``."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._produce: Script = client.register_script(scripts.PRODUCE)
        self._acquire: Script = client.register_script(scripts.ACQUIRE)
        self._renew: Script = client.register_script(scripts.RENEW)
        self._release: Script = client.register_script(scripts.RELEASE)
        self._commit: Script = client.register_script(scripts.COMMIT)
        self._dead_letter: Script = client.register_script(scripts.DEAD_LETTER_PENDING)
        self._trim: Script = client.register_script(scripts.TRIM)

    # -- producer ---------------------------------------------------------------------
    def produce(
        self,
        partition: int,
        file_id: str,
        start: int,
        end: int,
        payload: bytes,
        backlog_limit: int = 0,
        client: Any = None,
    ) -> Any:
        """Queue (with ``client=pipeline``) or run PRODUCE; parse with ProduceResult.parse."""
        k = self.keys
        return self._produce(
            keys=[k.offsets(partition), k.raw(partition)],
            args=[file_id, start, end, payload, backlog_limit],
            client=client,
        )

    # -- leases -----------------------------------------------------------------------
    def acquire(self, partition: int, group: str, worker: str, ttl_ms: int) -> int:
        """Take the lease; returns the fencing token, or 0 if another worker holds it."""
        k = self.keys
        return int(
            self._acquire(
                keys=[k.lease(partition, group), k.epoch(partition, group)],
                args=[worker, ttl_ms],
            )
        )

    def renew(self, partition: int, group: str, owner: str, ttl_ms: int, client: Any = None) -> Any:
        return self.renew_key(self.keys.lease(partition, group), owner, ttl_ms, client=client)

    def release(self, partition: int, group: str, owner: str, client: Any = None) -> Any:
        return self.release_key(self.keys.lease(partition, group), owner, client=client)

    def renew_key(self, key: str, owner: str, ttl_ms: int, client: Any = None) -> Any:
        """RENEW on any lease key (also the output-wide lease); 1 renewed, 0 lost."""
        return self._renew(keys=[key], args=[owner, ttl_ms], client=client)

    def release_key(self, key: str, owner: str, client: Any = None) -> Any:
        """RELEASE on any lease key; 1 released, 0 not held."""
        return self._release(keys=[key], args=[owner], client=client)

    # -- commits ----------------------------------------------------------------------
    def commit(
        self,
        partition: int,
        group: str,
        owner: str,
        *,
        stage_in: str,
        ids: Sequence[bytes | str],
        outputs: Sequence[bytes] = (),
        stage_out: str = "out",
        dead_letters: Sequence[DeadLetter] = (),
        checkpoint: dict[str, str | int] | None = None,
        dlq_maxlen: int = 0,
    ) -> int:
        """Fenced commit: append outputs and dead letters, save checkpoint, ack ``ids``.

        Returns:
            the output stream's length after the commit (0 when nothing was appended),
            for backpressure.

        Raises:
            Fenced: the lease is no longer this worker's; nothing was written.
        """
        k = self.keys
        now_ms = int(time.time() * 1000)
        args: list[Any] = [group, owner, dlq_maxlen, len(ids), *ids, len(outputs), *outputs]
        args.append(len(dead_letters))
        for dl in dead_letters:
            args.extend(dl.fields(now_ms))
        ckpt = checkpoint or {}
        args.append(len(ckpt))
        for name, value in ckpt.items():
            args.extend((name, value))
        result = self._commit(
            keys=[
                k.lease(partition, group),
                k.stream(stage_in, partition),
                k.stream(stage_out, partition),
                k.dlq(partition),
                k.checkpoint(partition, group),
            ],
            args=args,
        )
        if int(result[0]) == scripts.CODE_FENCED:
            raise Fenced(group, partition)
        return int(result[1])

    def dead_letter_pending(
        self,
        partition: int,
        group: str,
        owner: str,
        *,
        stage_in: str,
        kind: str,
        stage: str,
        reason: str,
        ids: Sequence[bytes | str],
    ) -> int:
        """Dead-letter and ack pending entries (poison); returns how many.

        Raises:
            Fenced: the lease is no longer this worker's.
        """
        if not ids:
            return 0
        k = self.keys
        n = int(
            self._dead_letter(
                keys=[k.lease(partition, group), k.stream(stage_in, partition), k.dlq(partition)],
                args=[group, owner, kind, stage, reason, int(time.time() * 1000), *ids],
            )
        )
        if n < 0:
            raise Fenced(group, partition)
        return n

    def trim(self, stream_key: str) -> tuple[int, str]:
        """Trim ``stream_key`` below what every group acknowledged; (trimmed, min id kept)."""
        n, minid = self._trim(keys=[stream_key], args=[])
        return int(n), minid.decode() if isinstance(minid, bytes) else str(minid)

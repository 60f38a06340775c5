"""Broker access: one Redis client built from config, the errors a broker raises, groups.

Connections are explicit: :func:`connect` builds a client that is passed down; nothing
here is a module-level global. Error replies redis-py has no class for (``NOREPLICAS``,
``MISCONF``, Redis 6.2's OOM inside a script) are given ours by :func:`classify_reply`, on
the connections :func:`connect` makes (their reply parser, :class:`ReplyParser`) and on
every script call (:mod:`tailrace.scriptbatch`); redis-py's own tables are left alone.
The URL may name one server, a Redis Cluster or a Sentinel deployment
(:mod:`tailrace.topology`); every key of one partition shares a hash tag, so each script
runs on the one node that holds its partition. The scripts' typed wrappers are in
:mod:`tailrace.scriptcalls`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from redis.connection import DefaultParser

from .errors import BrokerUnavailable, PipelineError
from .keys import Keys
from .topology import build_client as _build_client
from .topology import redact_url

__all__ = [
    "BROKER_ERRORS",
    "BrokerFullError",
    "NoReplicasError",
    "NotReplicated",
    "PartitionCountChanged",
    "ReplyParser",
    "classify_reply",
    "connect",
    "ensure_groups",
    "ensure_partition_count",
    "redact_url",
]


class NoReplicasError(redis.exceptions.ResponseError):
    """The master refused a write: fewer good replicas than its ``min-replicas-to-write``.

    Transient (a replica is resyncing or cut off): every loop retries it with backoff.
    """

    def __str__(self) -> str:
        return (f"NOREPLICAS {super().__str__()} (the master has fewer in-sync replicas than "
                "its min-replicas-to-write; writes wait until a replica is back)")


class MisconfError(redis.exceptions.ResponseError):
    """The master refused a write because it cannot persist (``MISCONF``); retried."""

    def __str__(self) -> str:
        return f"MISCONF {super().__str__()}"


class BrokerFullError(redis.exceptions.OutOfMemoryError):
    """Redis refused a write: ``used_memory`` is over its ``maxmemory`` (``OOM``).

    Backpressure, not a bug: the writers (agents per partition, processors' commits) hold
    their batches and retry while sinks acknowledge and the trimmed streams give memory
    back; what lets the pipeline drain still goes through (see :mod:`tailrace.scripts`).
    """

    def __str__(self) -> str:
        return (f"OOM {super().__str__()} (Redis is full: writes wait until sinks catch up "
                "and acknowledged entries are trimmed; raise maxmemory, add sinks, or check "
                "`tailrace status` for a stuck group)")


# Error replies by their first word: redis-py has no class for the first two, and its OOM
# class is plain (ours, a subclass, tells the operator what is going on).
_REPLY_CLASSES: dict[str, type[redis.exceptions.ResponseError]] = {
    "NOREPLICAS": NoReplicasError,
    "MISCONF": MisconfError,
    "OOM": BrokerFullError,
}


def classify_reply(error: BaseException) -> BaseException:
    """``error`` as the class tailrace handles it by (any other error comes back as it is).

    ``NOREPLICAS`` and ``MISCONF`` replies become :class:`NoReplicasError` and
    :class:`MisconfError`, OOM becomes :class:`BrokerFullError` (also Redis 6.2's, which
    reports a write refused inside a script as a plain script error): all broker errors,
    retried with backoff.
    """
    if not isinstance(error, redis.exceptions.ResponseError) or isinstance(
            error, (NoReplicasError, MisconfError, BrokerFullError)):
        return error
    text = str(error)
    if isinstance(error, redis.exceptions.OutOfMemoryError):  # redis-py cut "OOM " off
        return BrokerFullError(text)
    code, _, rest = text.partition(" ")
    cls = _REPLY_CLASSES.get(code)
    if cls is not None:
        return cls(rest)
    if "OOM command not allowed" in text:  # inside a script, on Redis 6.2
        return BrokerFullError(text)
    return error


_Parser: Any = DefaultParser  # hiredis's when installed, else redis-py's own


class ReplyParser(_Parser):  # type: ignore[misc]
    """redis-py's reply parser, with error replies given our classes (:func:`classify_reply`).

    Used by the connections :func:`connect` makes only.
    """

    @classmethod
    def parse_error(cls, response: str) -> BaseException:
        return classify_reply(super().parse_error(response))


class NotReplicated(BrokerUnavailable):
    """A commit ran on the master, but ``WAIT`` saw fewer replicas than asked in time.

    The caller treats the broker as down and retries; every script is idempotent, so the
    retry finds the commit (CONFLICT / already committed) instead of doing it twice.
    """


class PartitionCountChanged(PipelineError):
    """The config's ``service.partitions`` differs from the running pipeline's count.

    Not a broker outage: retrying cannot help, the operator must change the config (or
    drain the pipeline); the role stops with the message.
    """


# What a broken, restarting or failing-over broker raises; every loop retries these with
# backoff. RedisClusterException covers the cluster client's "slots not covered" and
# "cannot be connected" while a failover is in progress.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.AskError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.RedisClusterException,
    NoReplicasError,
    MisconfError,
    redis.exceptions.OutOfMemoryError,
    BrokerUnavailable,
    ConnectionError,
)

DEFAULT_SOCKET_TIMEOUT_S = 15.0  # must exceed the longest XREADGROUP BLOCK
DEFAULT_CONNECT_TIMEOUT_S = 5.0


def connect(url: str, *, name: str = "tailrace") -> redis.Redis:
    """A client for the broker at ``url``: one server, a Redis Cluster or Sentinel.

    ``redis://``, ``rediss://``, ``unix://`` (user/password allowed), and
    ``redis+cluster://host:port,...`` or ``redis+sentinel://host:port,.../SERVICE``
    (:mod:`tailrace.topology`). hiredis parses replies when installed. The client keeps
    raw bytes (no decoding): batch payloads are binary.

    Raises:
        BrokerUnavailable: the URL is malformed, or (cluster) no seed node answered.
    """
    return _build_client(
        url,
        socket_timeout=DEFAULT_SOCKET_TIMEOUT_S,
        socket_connect_timeout=DEFAULT_CONNECT_TIMEOUT_S,
        health_check_interval=30,
        client_name=name,
        decode_responses=False,
        parser_class=ReplyParser,
    )


def ensure_partition_count(client: redis.Redis, keys: Keys, partitions: int) -> None:
    """Record the partition count, or refuse a config that changed it.

    Changing the count would silently re-route files to other partitions (and break the
    per-file offset check), so a mismatch is an error that tells the operator what to do.

    Raises:
        PartitionCountChanged: the pipeline under this prefix has another count.
    """
    raw = client.hget(keys.meta(), "partitions")  # read first: a full Redis refuses HSETNX
    if raw is None:
        client.hsetnx(keys.meta(), "partitions", partitions)
        raw = client.hget(keys.meta(), "partitions")
    stored = int(raw or partitions)
    if stored != partitions:
        raise PartitionCountChanged(
            f"this pipeline (prefix {keys.prefix!r}) was created with {stored} partitions but "
            f"the config says service.partitions: {partitions}. Files are mapped to "
            f"partitions by hash, so a new count would send each file's next lines to "
            f"another partition than its earlier ones (out of order, offsets checked against "
            f"the wrong partition); nothing was started. Either set service.partitions back "
            f"to {stored}, or drain this pipeline (stop the agents, wait until `tailrace "
            f"status` shows no lag) and start the new count under another service.prefix"
        )


def ensure_groups(
    client: redis.Redis, keys: Keys, partitions: int, sink_groups: Iterable[str]
) -> None:
    """Create every consumer group of the pipeline (idempotent).

    All groups exist from the start, so trimming never drops entries a group that has not
    started yet would still need: ``processors`` on ``raw`` and one group per output on
    ``out``. Existing groups are looked up first and only missing ones created: a Redis
    that is full refuses XGROUP CREATE, and a worker must still be able to start then
    (sinks are what frees the memory).
    """
    from .keys import PROCESSORS_GROUP

    wanted = [("raw", PROCESSORS_GROUP)] + [("out", g) for g in sink_groups]
    streams = [keys.stream(stage, p) for p in range(partitions) for stage in ("raw", "out")]
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
    have: set[tuple[str, str]] = set()
    for stream, info in zip(streams, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(info, BROKER_ERRORS):
            raise info
        if isinstance(info, list):  # else "no such key": the stream does not exist yet
            have.update((stream, _text(g["name"])) for g in info)
    pipe = client.pipeline(transaction=False)
    missing = 0
    for p in range(partitions):
        for stage, group in wanted:
            stream = keys.stream(stage, p)
            if (stream, group) not in have:
                pipe.xgroup_create(stream, group, id="0", mkstream=True)
                missing += 1
    if not missing:
        return
    for result in pipe.execute(raise_on_error=False):
        if isinstance(result, BROKER_ERRORS):
            raise result
        if isinstance(result, redis.exceptions.ResponseError) and "BUSYGROUP" not in str(result):
            raise result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

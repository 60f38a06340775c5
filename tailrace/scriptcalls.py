"""Typed Python calls of the Lua scripts in :mod:`tailrace.scripts`.

Each wrapper turns a script's return codes into a typed result or exception
(:class:`ProduceResult`, :class:`~tailrace.errors.Fenced`); calls that go out together use a
:class:`ScriptBatch` (one round trip per node, NOSCRIPT handled, optional ``WAIT`` for
replicas through a :class:`WaitPolicy`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from . import scripts
from .broker import BROKER_ERRORS, BrokerFullError, NotReplicated
from .errors import BrokerUnavailable, Fenced
from .keys import Keys
from .redaction import scrub
from .topology import is_cluster, node_of, route_to
from .wire import RECORDS_VERSION

__all__ = ["DeadLetter", "ProduceResult", "ScriptBatch", "Scripts", "WaitPolicy"]


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """Synchronous replication for commits: ``WAIT replicas timeout_ms`` after each.

    ``replicas`` 0 (the default) leaves replication asynchronous: a failover may lose the
    last commits the old master had not yet sent (docs/scaling.md says what that costs).
    """

    replicas: int = 0
    timeout_ms: int = 1000


@dataclass(frozen=True, slots=True)
class ProduceResult:
    """Outcome of one idempotent-producer call.

    ``status`` is ``ok`` (appended; offset moved to the batch end), ``conflict`` (the stored
    offset is ``offset``: resume there), ``backpressure`` (backlog is ``backlog`` entries)
    or ``memory`` (the node's used memory, ``memory`` bytes, is over the limit).
    """

    status: str
    entry_id: str = ""
    offset: int = 0
    backlog: int = 0
    memory: int = 0

    @staticmethod
    def parse(raw: Sequence[Any]) -> ProduceResult:
        code, value = int(raw[0]), raw[1]
        text = value.decode() if isinstance(value, bytes) else str(value)
        if code == scripts.CODE_OK:
            return ProduceResult("ok", entry_id=text)
        if code == scripts.CODE_CONFLICT:
            return ProduceResult("conflict", offset=int(text))
        if code == scripts.CODE_MEMORY:
            return ProduceResult("memory", memory=int(text))
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
        return [self.kind, self.payload, self.stage, self.plugin, scrub(self.error), self.source,
                now_ms]


class ScriptBatch:
    """Script calls sent together: one round trip per node, in the order they were added.

    Built by :meth:`Scripts.batch`; the wrappers that accept ``client=`` queue into it. On
    a Redis Cluster each call goes to the node of its keys (all of one partition), and the
    nodes are written to before any is read. A node that lost the scripts (restarted,
    promoted replica) answers NOSCRIPT: the scripts are loaded again and those calls, which
    did not run, are sent once more. With a :class:`WaitPolicy`, a ``WAIT`` follows the
    calls on each node's connection.
    """

    def __init__(self, client: redis.Redis, wait: WaitPolicy) -> None:
        self.client = client
        self.wait = wait
        self._calls: list[tuple[Script, list[str], list[Any]]] = []

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, script: Script, keys: list[str], args: list[Any]) -> None:
        self._calls.append((script, keys, args))

    def execute(self, *, partial: bool = False) -> list[Any]:
        """Run the queued calls (the batch is empty afterwards).

        Args:
            partial: return a broker error in the place of each call it hit (a cluster
                node that is down) instead of raising it, so the replies of the nodes that
                answered can be used.

        Returns:
            each call's reply in order; a call the server refused for its own reasons
            (e.g. ``OOM``) has its :class:`redis.exceptions.ResponseError` in its place.

        Raises:
            any of :data:`BROKER_ERRORS` when a node cannot be reached (unless
            ``partial``), and :class:`NotReplicated` when ``WAIT`` saw too few replicas.
            Some calls may have run; every script is idempotent, so the caller simply
            retries the batch.
        """
        calls, self._calls = self._calls, []
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _attempt in range(3):
            try:
                replies = self._send([calls[i] for i in todo])
            except BROKER_ERRORS:
                if not partial or not is_cluster(self.client):
                    raise
                replies = self._send_per_node([calls[i] for i in todo])
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                reply = _full_in_script(reply)
                if isinstance(reply, redis.exceptions.NoScriptError):
                    missing.append(i)
                elif (isinstance(reply, BROKER_ERRORS) and not partial
                      and not isinstance(reply, redis.exceptions.OutOfMemoryError)):
                    raise reply  # (a full node refuses its calls only: see execute's Returns)
                else:
                    results[i] = reply
            if not missing:
                return results
            for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
                script.sha = self.client.script_load(script.script)  # every master
            todo = missing
        raise BrokerUnavailable("the broker keeps answering NOSCRIPT after loading the scripts "
                                "(is a proxy spreading one connection over several servers?)")

    def _send_per_node(self, calls: list[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        """Like :meth:`_send`, one node at a time: a node that fails fails only its calls."""
        by_node: dict[str, list[int]] = {}
        for i, (_script, keys, _args) in enumerate(calls):
            by_node.setdefault(node_of(self.client, keys[0]), []).append(i)
        replies: list[Any] = [None] * len(calls)
        for idx in by_node.values():
            try:
                got = self._send([calls[i] for i in idx])
            except BROKER_ERRORS as exc:
                got = [exc] * len(idx)
            for i, reply in zip(idx, got, strict=True):
                replies[i] = reply
        return replies

    def _send(self, calls: list[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        pipe: Any = self.client.pipeline(transaction=False)
        waits: dict[str, str] = {}  # node -> a key on it
        for script, keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            if self.wait.replicas:
                waits.setdefault(node_of(self.client, keys[0]), keys[0])
        for _node, key in waits.items():
            pipe.execute_command("WAIT", self.wait.replicas, self.wait.timeout_ms,
                                 **route_to(self.client, key))
        out = list(pipe.execute(raise_on_error=False))
        replies, acked = out[: len(calls)], out[len(calls) :]
        for node, n in zip(waits, acked, strict=True):
            _raise_wait_error(n, f"node {node}")
            if int(n) < self.wait.replicas:
                where = f" on node {node}" if node != "default" else ""
                raise NotReplicated(
                    f"commit not confirmed by {self.wait.replicas} replica(s) within "
                    f"{self.wait.timeout_ms} ms{where} (only {int(n)} acknowledged): "
                    "retrying; check the replicas' link and lag (INFO replication)")
        return replies


def _full_in_script(reply: Any) -> Any:
    """Redis 6.2 reports a write refused by maxmemory inside a script as a plain script error;
    give it the class Redis 7 gives it (:class:`BrokerFullError`, one of the broker errors)."""
    if (isinstance(reply, redis.exceptions.ResponseError)
            and not isinstance(reply, redis.exceptions.OutOfMemoryError)
            and "OOM command not allowed" in str(reply)):
        return BrokerFullError(str(reply))
    return reply


def _call(script: Script, keys: list[str], args: list[Any], client: Any = None) -> Any:
    """Run one script now (EVALSHA, loaded again on NOSCRIPT by redis-py)."""
    try:
        return script(keys=keys, args=args, client=client)
    except redis.exceptions.ResponseError as exc:
        raise _full_in_script(exc) from None


def _raise_wait_error(reply: Any, where: str) -> None:
    """Raise an error reply of a WAIT (or of its probe write) as a broker error.

    WAIT sent to a node that became a replica in a failover ("WAIT cannot be used with
    replica instances") is a moment of the topology changing, not a bug: the loop retries
    once the client has the new slot map.
    """
    if not isinstance(reply, BaseException):
        return
    if isinstance(reply, BROKER_ERRORS):
        raise reply
    raise BrokerUnavailable(f"confirming writes on {where} failed: {reply} (a failover in "
                            "progress?); retrying with the new topology")


class Scripts:
    """The Lua scripts of :mod:`tailrace.scripts`, registered once on ``client``.

    Args:
        wait: ``WAIT`` after every commit (PRODUCE batches, COMMIT) for this many replicas;
            the default leaves replication asynchronous.
    """

    def __init__(self, client: redis.Redis, keys: Keys, *, wait: WaitPolicy | None = None
                 ) -> None:
        self.client = client
        self.keys = keys
        self.wait = wait or WaitPolicy()
        self._produce: Script = client.register_script(scripts.PRODUCE)
        self._acquire: Script = client.register_script(scripts.ACQUIRE)
        self._acquire_key: Script = client.register_script(scripts.ACQUIRE_KEY)
        self._members: Script = client.register_script(scripts.MEMBERS)
        self._renew: Script = client.register_script(scripts.RENEW)
        self._release: Script = client.register_script(scripts.RELEASE)
        self._commit: Script = client.register_script(scripts.COMMIT)
        self._dead_letter: Script = client.register_script(scripts.DEAD_LETTER_PENDING)
        self._trim: Script = client.register_script(scripts.TRIM)

    def batch(self, *, wait: bool = False) -> ScriptBatch:
        """An empty :class:`ScriptBatch`; with ``wait`` it applies this :class:`WaitPolicy`."""
        return ScriptBatch(self.client, self.wait if wait else WaitPolicy())

    @staticmethod
    def _run(script: Script, keys: list[str], args: list[Any], client: Any) -> Any:
        if isinstance(client, ScriptBatch):
            client.add(script, keys, args)
            return None
        return _call(script, keys, args, client)

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
        *,
        memory_limit: int | None = None,
    ) -> Any:
        """Run PRODUCE, or queue it in ``client`` (a :meth:`batch`); parse the reply with
        :meth:`ProduceResult.parse`. ``memory_limit``: refuse (status ``memory``) while the
        node's used memory is over this many bytes (0: 90% of its maxmemory)."""
        k = self.keys
        args: list[Any] = [file_id, start, end, payload, backlog_limit]
        if memory_limit is not None:
            args.append(memory_limit)
        return self._run(self._produce, [k.offsets(partition), k.raw(partition)], args, client)

    # -- leases -----------------------------------------------------------------------
    def acquire(self, partition: int, group: str, worker: str, ttl_ms: int) -> int:
        """Take the lease; returns the fencing token, or 0 if another worker holds it."""
        k = self.keys
        return int(_call(self._acquire, [k.lease(partition, group), k.epoch(partition, group)],
                         [worker, ttl_ms]))

    def acquire_key(self, key: str, owner: str, ttl_ms: int) -> bool:
        """Take a free lease without a fencing token (a single-writer output's)."""
        return int(_call(self._acquire_key, [key], [owner, ttl_ms])) == 1

    def members(self, key: str, worker: str, ttl_ms: int) -> int:
        """Membership heartbeat of ``worker`` in a group; returns the live member count."""
        return int(_call(self._members, [key], [worker, int(time.time() * 1000), ttl_ms]))

    def renew(self, partition: int, group: str, owner: str, ttl_ms: int, client: Any = None) -> Any:
        return self.renew_key(self.keys.lease(partition, group), owner, ttl_ms, client=client)

    def release(self, partition: int, group: str, owner: str, client: Any = None) -> Any:
        return self.release_key(self.keys.lease(partition, group), owner, client=client)

    def renew_key(self, key: str, owner: str, ttl_ms: int, client: Any = None) -> Any:
        """RENEW on any lease key (also the output-wide lease); 1 renewed, 0 lost."""
        return self._run(self._renew, [key], [owner, ttl_ms], client)

    def release_key(self, key: str, owner: str, client: Any = None) -> Any:
        """RELEASE on any lease key; 1 released, 0 not held."""
        return self._run(self._release, [key], [owner], client)

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
            NotReplicated: committed on the master, not confirmed by the replicas asked
                for (:class:`WaitPolicy`); retry (a retried COMMIT is a no-op).
        """
        k = self.keys
        now_ms = int(time.time() * 1000)
        args: list[Any] = [group, owner, dlq_maxlen, len(ids), *ids, len(outputs),
                           RECORDS_VERSION, *outputs]
        args.append(len(dead_letters))
        for dl in dead_letters:
            args.extend(dl.fields(now_ms))
        ckpt = checkpoint or {}
        args.append(len(ckpt))
        for name, value in ckpt.items():
            args.extend((name, value))
        keys = [
            k.lease(partition, group),
            k.stream(stage_in, partition),
            k.stream(stage_out, partition),
            k.dlq(partition),
            k.checkpoint(partition, group),
        ]
        if self.wait.replicas:
            batch = self.batch(wait=True)
            batch.add(self._commit, keys, args)
            result = batch.execute()[0]
            if isinstance(result, BaseException):
                raise result
        else:
            result = _call(self._commit, keys, args)
        if int(result[0]) == scripts.CODE_FENCED:
            raise Fenced(group, partition)
        return int(result[1])

    def confirm(self, partition: int) -> None:
        """Wait until the replicas have everything the partition's node wrote so far.

        One write to the partition's probe key and ``WAIT`` on the same connection: the
        replicas acknowledge in order, so this confirms every earlier commit there too
        (e.g. one that raised :class:`NotReplicated`). No-op without a :class:`WaitPolicy`.

        Raises:
            NotReplicated: still not confirmed within the policy's timeout.
        """
        if not self.wait.replicas:
            return
        key = self.keys.probe(partition)
        pipe: Any = self.client.pipeline(transaction=False)
        pipe.set(key, "1", px=60_000)
        pipe.execute_command("WAIT", self.wait.replicas, self.wait.timeout_ms,
                             **route_to(self.client, key))
        written, acked = pipe.execute(raise_on_error=False)
        for reply in (written, acked):
            _raise_wait_error(reply, f"partition {partition}'s node")
        if int(acked) < self.wait.replicas:
            raise NotReplicated(
                f"partition {partition}'s Redis node has not confirmed earlier commits to "
                f"{self.wait.replicas} replica(s) within {self.wait.timeout_ms} ms (only "
                f"{int(acked)}): holding back until it does; check the replicas (INFO "
                "replication) or restart a failed node so it rejoins as a replica")

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
        plugin: str = "",
    ) -> int:
        """Dead-letter and ack pending entries (poison); returns how many.

        ``plugin`` names what failed on them (an output's id), as every dead letter does.

        Raises:
            Fenced: the lease is no longer this worker's.
        """
        if not ids:
            return 0
        k = self.keys
        n = int(_call(
            self._dead_letter,
            [k.lease(partition, group), k.stream(stage_in, partition), k.dlq(partition)],
            [group, owner, kind, stage, scrub(reason), int(time.time() * 1000), plugin or stage,
             *ids],
        ))
        if n < 0:
            raise Fenced(group, partition)
        return n

    def trim(self, stream_key: str) -> tuple[int, str]:
        """Trim ``stream_key`` below what every group acknowledged; (trimmed, min id kept)."""
        n, minid = _call(self._trim, [stream_key], [])
        return int(n), minid.decode() if isinstance(minid, bytes) else str(minid)

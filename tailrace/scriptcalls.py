"""Typed Python calls of the Lua scripts in :mod:`tailrace.scripts`: every one of them.

:class:`Scripts` registers each script once per client and has one wrapper per script, in
the order of :mod:`tailrace.scripts`: the wrapper builds the script's ``ARGV`` in the order
its header lists (wire versions from :mod:`tailrace.wire`) and turns its reply codes into a
typed result or exception (:class:`ProduceResult`, :class:`ReplayResult`,
:class:`~tailrace.errors.Fenced`). Calls that go out together use a :class:`ScriptBatch`
(:mod:`tailrace.scriptbatch`: one round trip per node, NOSCRIPT handled, optional ``WAIT``
for replicas through a :class:`WaitPolicy`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Required, TypedDict, Unpack

import redis
from redis.commands.core import Script

from . import scripts
from .broker import NotReplicated, classify_reply
from .errors import Fenced
from .keys import Keys
from .redaction import scrub
from .scriptbatch import Appended, ScriptBatch, WaitPolicy, call, raise_wait_error
from .topology import is_cluster, route_to
from .wire import FORMAT_VERSION, RECORDS_VERSION

__all__ = ["DeadLetter", "DlqSummary", "ProduceResult", "ReplayResult", "ScriptBatch",
           "Scripts", "WaitPolicy"]


class CommitCall(TypedDict, total=False):
    """What a COMMIT carries besides its partition, group and owner (:meth:`Scripts.commit`)."""

    stage_in: Required[str]
    ids: Required[Sequence[bytes | str]]
    outputs: Sequence[bytes]
    stage_out: str
    dead_letters: Sequence[DeadLetter]
    checkpoint: dict[str, str | int] | None
    dlq_maxlen: int


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
    def parse(raw: Sequence[Any] | Appended) -> ProduceResult:
        appended = raw.entry_ids[0] if isinstance(raw, Appended) else None
        reply = raw.reply if isinstance(raw, Appended) else raw
        if isinstance(reply, BaseException):
            raise reply
        code, value = int(reply[0]), reply[1]
        if code == scripts.CODE_OK and appended is not None:
            value = appended  # the batch went in beside the script: the XADD's id
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
    version: int = FORMAT_VERSION  # wire format version of ``payload``

    def fields(self, now_ms: int) -> list[Any]:
        """COMMIT's 8 fields of this dead letter (see :data:`tailrace.scripts.COMMIT`)."""
        return [self.kind, self.payload, self.stage, self.plugin, scrub(self.error), self.source,
                now_ms, self.version]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Outcome of one REPLAY call: ``replayed`` (``entry_id`` is the new entry), or
    nothing written because dead letter ``entry_id`` was replayed ``already`` or is
    ``gone`` (purged)."""

    status: Literal["replayed", "already", "gone"]
    entry_id: str

    @staticmethod
    def parse(raw: Sequence[Any]) -> ReplayResult:
        code, value = int(raw[0]), raw[1]
        text = value.decode() if isinstance(value, bytes) else str(value)
        if code == scripts.CODE_OK:
            return ReplayResult("replayed", text)
        if code == scripts.CODE_ALREADY:
            return ReplayResult("already", text)
        if code == scripts.CODE_GONE:
            return ReplayResult("gone", text)
        raise ValueError(f"REPLAY answered an unknown code {code!r}")


@dataclass(frozen=True, slots=True)
class DlqSummary:
    """One dead letter as DLQ_SCAN lists it (no payload)."""

    id: str
    kind: str
    stage: str
    plugin: str
    time_ms: int


class Scripts:
    """Every Lua script of :mod:`tailrace.scripts`, registered once on ``client``.

    Registering computes a script's SHA only; the first call loads it (EVALSHA, NOSCRIPT
    handled), so building one of these is cheap.

    Args:
        wait: ``WAIT`` after every commit (PRODUCE batches, COMMIT) for this many replicas;
            the default leaves replication asynchronous.
    """

    def __init__(self, client: redis.Redis, keys: Keys, *, wait: WaitPolicy | None = None
                 ) -> None:
        self.client = client
        self.keys = keys
        self.wait = wait or WaitPolicy()
        self.cluster = is_cluster(client)
        self._produce: Script = client.register_script(scripts.PRODUCE)
        self._acquire: Script = client.register_script(scripts.ACQUIRE)
        self._acquire_key: Script = client.register_script(scripts.ACQUIRE_KEY)
        self._members: Script = client.register_script(scripts.MEMBERS)
        self._renew: Script = client.register_script(scripts.RENEW)
        self._release: Script = client.register_script(scripts.RELEASE)
        self._commit: Script = client.register_script(scripts.COMMIT)
        self._dead_letter: Script = client.register_script(scripts.DEAD_LETTER_PENDING)
        self._trim: Script = client.register_script(scripts.TRIM)
        self._publish: Script = client.register_script(scripts.PUBLISH)
        self._throttle: Script = client.register_script(scripts.THROTTLE)
        self._dlq_scan: Script = client.register_script(scripts.DLQ_SCAN)
        self._replay: Script = client.register_script(scripts.REPLAY)

    def batch(self, *, wait: bool = False) -> ScriptBatch:
        """An empty :class:`ScriptBatch`; with ``wait`` it applies this :class:`WaitPolicy`."""
        return ScriptBatch(self.client, self.wait if wait else WaitPolicy())

    def _run_beside(self, script: Script, keys: list[str], args: list[Any],
                    append: tuple[str, list[list[Any]]] | None, client: Any = None, *,
                    wait: bool = False) -> Any:
        """Queue a call with entries appended beside it in ``client`` (a :meth:`batch`), or
        run it now in a batch of its own (``wait``: under this WaitPolicy)."""
        batch = client if isinstance(client, ScriptBatch) else self.batch(wait=wait)
        batch.add(script, keys, args, append=append)
        if batch is client:
            return None
        result = batch.execute()[0]
        if isinstance(result, BaseException):
            raise result
        return result

    @staticmethod
    def _run(script: Script, keys: list[str], args: list[Any], client: Any) -> Any:
        if isinstance(client, ScriptBatch):
            client.add(script, keys, args)
            return None
        return call(script, keys, args, client)

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
        keys = [k.offsets(partition), k.raw(partition)]
        beside = bool(payload) and not self.cluster  # the batch out of Lua (scripts.PRODUCE)
        args: list[Any] = [file_id, start, end, b"" if beside else payload, backlog_limit,
                           FORMAT_VERSION, "" if memory_limit is None else memory_limit,
                           "1" if beside else "0"]
        if not beside:
            return self._run(self._produce, keys, args, client)
        return self._run_beside(self._produce, keys, args,
                                (keys[1], [["v", FORMAT_VERSION, "b", payload]]), client)

    # -- leases -----------------------------------------------------------------------
    def acquire(self, partition: int, group: str, worker: str, ttl_ms: int) -> int:
        """Take the lease; returns the fencing token, or 0 if another worker holds it."""
        k = self.keys
        return int(call(self._acquire, [k.lease(partition, group), k.epoch(partition, group)],
                        [worker, ttl_ms]))

    def acquire_key(self, key: str, owner: str, ttl_ms: int) -> bool:
        """Take a free lease without a fencing token (a single-writer output's)."""
        return int(call(self._acquire_key, [key], [owner, ttl_ms])) == 1

    def members(self, key: str, worker: str, ttl_ms: int) -> int:
        """Membership heartbeat of ``worker`` in a group; returns the live member count."""
        return int(call(self._members, [key], [worker, int(time.time() * 1000), ttl_ms]))

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
    def commit(self, partition: int, group: str, owner: str, **call: Unpack[CommitCall]) -> int:
        """Fenced commit: append outputs and dead letters, save checkpoint, ack ``ids``.

        Returns:
            the output stream's length after the commit (0 when nothing was appended),
            for backpressure.

        Raises:
            Fenced: the lease is no longer this worker's; nothing was written.
            NotReplicated: committed on the master, not confirmed by the replicas asked
                for (:class:`WaitPolicy`); retry (a retried COMMIT is a no-op).
        """
        return self.send_commit(partition, group, owner, **call, in_flight=False)()

    def send_commit(
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
        in_flight: bool = True,
    ) -> Callable[[], int]:
        """:meth:`commit`, sent now; the function returned reads its reply and gives what
        :meth:`commit` returns (or raises what it raises).

        With ``in_flight`` the commit is only sent when it can be (outputs appended beside
        the script, one server, no :class:`WaitPolicy`): its reply is read when the function
        is called, so the caller can work on meanwhile. Otherwise it runs now.
        """
        k = self.keys
        now_ms = int(time.time() * 1000)
        # Outputs go in a MULTI beside the script, out of its ARGV (see scripts.COMMIT),
        # except on a cluster (its pipelines cannot route MULTI).
        beside = bool(outputs) and not self.cluster
        inline = () if beside else outputs
        args: list[Any] = [group, owner, dlq_maxlen, len(outputs) if beside else 0, len(ids),
                           *ids, len(inline), RECORDS_VERSION, *inline]
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
        append = (keys[2], [["v", RECORDS_VERSION, "b", out] for out in outputs])
        if beside and in_flight and not self.wait.replicas:
            batch = self.batch()
            batch.add(self._commit, keys, args, append=append)
            replies = batch.send()
            return lambda: self._commit_outcome(replies()[0], group, partition)
        if beside or self.wait.replicas:
            result = self._run_beside(self._commit, keys, args, append if beside else None,
                                      wait=True)  # WAIT when the policy asks for replicas
        else:
            result = call(self._commit, keys, args)
        return lambda: self._commit_outcome(result, group, partition)

    @staticmethod
    def _commit_outcome(result: Any, group: str, partition: int) -> int:
        """COMMIT's reply as :meth:`commit` returns it: the output's length, or raised."""
        if isinstance(result, Appended):
            result = result.reply
        if isinstance(result, BaseException):
            raise classify_reply(result)
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
            raise_wait_error(reply, f"partition {partition}'s node")
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
        n = int(call(
            self._dead_letter,
            [k.lease(partition, group), k.stream(stage_in, partition), k.dlq(partition)],
            [group, owner, kind, stage, scrub(reason), int(time.time() * 1000), plugin or stage,
             FORMAT_VERSION, *ids],
        ))
        if n == scripts.CODE_FENCED:
            raise Fenced(group, partition)
        return n

    def trim(self, stream_key: str) -> tuple[int, str]:
        """Trim ``stream_key`` below what every group acknowledged; (trimmed, min id kept)."""
        n, minid = call(self._trim, [stream_key], [])
        return int(n), minid.decode() if isinstance(minid, bytes) else str(minid)

    # -- status, rate limits, dead letters --------------------------------------------
    def publish(self, key: str, record: bytes, ttl_ms: int) -> None:
        """Write a worker's status record (also when Redis is full: see PUBLISH)."""
        call(self._publish, [key], [record, ttl_ms])

    def throttle(self, keys: list[str], wanted: Sequence[int], *, rate: float, window: int,
                 interval_ms: int) -> list[int]:
        """Records granted for each subject (``keys[i]`` wants ``wanted[i]``), counted at once."""
        return [int(n) for n in call(self._throttle, keys,
                                     [repr(float(rate)), window, interval_ms, *wanted])]

    def dlq_scan(self, partition: int, start: str, end: str, count: int) -> list[DlqSummary]:
        """Up to ``count`` dead letters of ``partition`` from ``start`` (``(`` = exclusive)."""
        flat: Any = call(self._dlq_scan, [self.keys.dlq(partition)], [start, end, count])
        text = _text
        return [DlqSummary(text(flat[i]), text(flat[i + 1]), text(flat[i + 2]),
                           text(flat[i + 3]), int(flat[i + 4] or 0))
                for i in range(0, len(flat), 5)]

    def replay(self, partition: int, ids: Sequence[str], payload: bytes, *,
               stream: Literal["raw", "out"], address: str = "", version: int = FORMAT_VERSION,
               now_ms: int | None = None) -> ReplayResult:
        """Append ``payload`` (wire ``version``) to the partition's ``stream`` for the
        output ``address`` ('' = every output) and mark dead letters ``ids`` replayed, in
        one step; nothing when one of them was replayed or purged (the result names it)."""
        k = self.keys
        target = k.raw(partition) if stream == "raw" else k.out(partition)
        stamp = int(time.time() * 1000) if now_ms is None else now_ms
        raw = call(self._replay, [k.dlq(partition), target, k.dlq_replayed(partition)],
                   [address, stamp, payload, stream, version, *ids])
        return ReplayResult.parse(raw)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")

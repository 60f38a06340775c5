"""Dead-letter replay as RQ jobs: resumable, visible, retried, and never twice.

``tailrace dlq replay`` plans a *run*: it lists the selected dead letters (without their
payloads), leaves out those replayed before, cuts the rest into chunks of one partition
each and enqueues one RQ job per chunk on the pipeline's ``replay`` queue. A job
(:func:`replay_chunk`) reads its dead letters in slices, combines the records bound for
the same output into batches, and appends each batch with the REPLAY script, which marks
every dead letter in it replayed in the same step:

- records go to the partition's ``out`` stream, addressed (field ``to``) to the output
  named by ``--output``, or to the output that refused them (stage ``sink:NAME``): the
  other outputs skip them, so nothing reaches an output twice; records a processor
  refused go to every output;
- raw batches go back to the partition's ``raw`` stream: the processors redo them.

A job that dies is retried by RQ; a run that is interrupted is resumed by running the same
command again: entries already replayed are skipped (atomically, in the script). Progress
is in ``tr:replay:RUN`` (``tailrace dlq runs``) and in each job's ``meta``.

Any RQ worker on the pipeline's Redis runs the jobs: ``tailrace worker -c FILE --queue
replay``, or plain ``rq worker tr-replay --url redis://...`` with this package importable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
from rq import Queue, Retry, get_current_job
from rq.job import Job

from tailrace.errors import RecordError
from tailrace.keys import Keys
from tailrace.scriptcalls import Scripts
from tailrace.wire import FORMAT_VERSION, decode_records, encode_records

from .dlq import DeadLetterStore, Selection, Summary

__all__ = [
    "DEFAULT_CHUNK",
    "ReplayPlan",
    "enqueue",
    "new_run_id",
    "plan",
    "replay_chunk",
    "replay_ids",
    "run_progress",
]

DEFAULT_CHUNK = 1000
_SLICE = 200  # dead letters read per round trip
_BATCH_RECORDS = 1000  # most records in one replayed entry
_RUN_TTL_S = 7 * 24 * 3600
_BACKLOG_WAIT_S = 0.5
_JOB_TIMEOUT_S = 3600  # a chunk may wait out a backlog; RQ's default (180 s) is too short
JOB_RETRY = Retry(max=5, interval=[2, 10, 30, 120, 600])


def new_run_id() -> str:
    """``20240102T030405-1a2b``: sortable by start time, unique."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(2).hex()


@dataclass
class ReplayPlan:
    """What a run will replay: chunks of (partition, ids), and what it leaves out."""

    chunks: list[tuple[int, list[str]]] = field(default_factory=list)
    already: int = 0  # replayed by an earlier run
    raw_skipped: int = 0  # raw batches left out because records were addressed to an output
    orphaned: dict[str, int] = field(default_factory=dict)  # gone output -> entries left out

    @property
    def total(self) -> int:
        return sum(len(ids) for _, ids in self.chunks)


def plan(store: DeadLetterStore, selection: Selection, *, output: str | None,
         chunk: int = DEFAULT_CHUNK, outputs: Iterable[str] | None = None) -> ReplayPlan:
    """The chunks to replay for ``selection`` (``output``: address records to it).

    With ``outputs`` (the configured output ids), records refused by an output that is no
    longer configured are left out (counted in ``orphaned``) unless ``output`` names
    another: addressed to no one, they would be acknowledged by every output unseen.
    """
    known = None if outputs is None else set(outputs)
    result = ReplayPlan()
    current: dict[int, list[str]] = {}
    page: list[Summary] = []

    def take(items: list[Summary]) -> None:
        done = store.replayed(items)
        for s in items:
            if (s.partition, s.id) in done:
                result.already += 1
                continue
            if output is not None and s.kind == "raw":
                result.raw_skipped += 1  # a raw batch goes through the processors to all
                continue
            gone = s.stage[5:] if s.stage.startswith("sink:") else None
            if (output is None and known is not None and s.kind != "raw" and gone is not None
                    and gone not in known):
                result.orphaned[gone] = result.orphaned.get(gone, 0) + 1
                continue
            ids = current.setdefault(s.partition, [])
            ids.append(s.id)
            if len(ids) >= chunk:
                result.chunks.append((s.partition, ids))
                current[s.partition] = []

    for s in store.scan(selection):
        page.append(s)
        if len(page) >= 500:
            take(page)
            page = []
    take(page)
    result.chunks += [(p, ids) for p, ids in sorted(current.items()) if ids]
    return result


def enqueue(client: redis.Redis, keys: Keys, replay: ReplayPlan, *, run: str,
            output: str | None, backlog_limit: int, description: str = "") -> list[Job]:
    """One RQ job per chunk on the ``replay`` queue; the run's progress hash starts here."""
    run_key = keys.replay_run(run)
    client.hset(run_key, mapping={
        "total": replay.total, "replayed": 0, "already": 0, "gone": 0,
        "jobs": len(replay.chunks), "output": output or "",
        "started": int(time.time()), "selection": description,
    })
    client.expire(run_key, _RUN_TTL_S)
    queue = Queue(keys.queue("replay"), connection=client)
    jobs = []
    for n, (partition, ids) in enumerate(replay.chunks):
        jobs.append(queue.enqueue(
            replay_chunk, keys.prefix, partition, ids, output or "", run, backlog_limit,
            job_id=f"{keys.prefix}-replay-{run}-{n}", retry=JOB_RETRY, job_timeout=_JOB_TIMEOUT_S,
            description=f"replay {len(ids)} dead letters of partition {partition} (run {run})",
            meta={"run": run, "partition": partition, "total": len(ids), "done": 0},
            result_ttl=_RUN_TTL_S, failure_ttl=_RUN_TTL_S,
        ))
    return jobs


@dataclass
class _Group:
    """Dead letters to append as one entry: the same target stream and address."""

    stream: Literal["raw", "out"]
    address: str
    ids: list[str] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # records of each id, in order
    payload: bytes | None = None  # a raw batch, or a payload that is not a record list
    version: int = FORMAT_VERSION  # of ``payload``; records are sent as encode_records makes

    def drop(self, entry_id: str) -> None:
        """Leave dead letter ``entry_id`` (and its records) out of this group."""
        at = self.ids.index(entry_id)
        del self.ids[at]
        if self.payload is None:
            start = sum(self.sizes[:at])
            del self.records[start : start + self.sizes[at]]
            del self.sizes[at]


def _groups(entries: list[tuple[str, dict[bytes, bytes]]], output: str) -> list[_Group]:
    """Combine the records of dead letters bound for the same output into batches."""
    out: list[_Group] = []
    open_: dict[str, _Group] = {}
    for entry_id, fields in entries:
        kind = fields.get(b"kind", b"").decode()
        payload = fields.get(b"b") or b""
        # A dead letter keeps the wire version of its payload (DEAD_LETTER_PENDING copies it).
        v = fields.get(b"v") or b"1"
        version = int(v) if v.isdigit() else FORMAT_VERSION
        if kind == "raw":
            out.append(_Group("raw", "", [entry_id], payload=payload, version=version))
            continue
        stage = fields.get(b"stage", b"").decode()
        address = output or (stage[5:] if stage.startswith("sink:") else "")
        try:
            records = decode_records({b"v": v, b"b": payload})
        except RecordError:  # kept as it is: the sink will say what is wrong with it
            out.append(_Group("out", address, [entry_id], payload=payload, version=version))
            continue
        group = open_.get(address)
        if group is None or len(group.records) + len(records) > _BATCH_RECORDS:
            group = open_[address] = _Group("out", address)
            out.append(group)
        group.ids.append(entry_id)
        group.records.extend(records)
        group.sizes.append(len(records))
    return out


def replay_ids(client: redis.Redis, keys: Keys, partition: int, ids: Iterable[str], *,
               output: str = "", backlog_limit: int = 0, run: str | None = None,
               on_progress: Any = None) -> dict[str, int]:
    """Replay dead letters ``ids`` of ``partition``, each at most once (see module doc).

    The records of dead letters bound for the same output travel together, up to
    1,000 per entry (a dead letter usually holds one record). Waits while the partition's
    backlog is over ``backlog_limit`` entries (0 = never): a large replay pushes back like
    any producer.

    Returns:
        counts: ``replayed``, ``already`` (by an earlier run or attempt), ``gone`` (purged).
    """
    scripts = Scripts(client, keys)
    todo = list(ids)
    totals = {"replayed": 0, "already": 0, "gone": 0}
    for i in range(0, len(todo), _SLICE):
        part = todo[i : i + _SLICE]
        while backlog_limit and max(int(client.xlen(keys.out(partition))),
                                    int(client.xlen(keys.raw(partition)))) >= backlog_limit:
            time.sleep(_BACKLOG_WAIT_S)
        counts = _replay_slice(client, keys, scripts, partition, part, output)
        for name, n in counts.items():
            totals[name] += n
        if run is not None:
            pipe = client.pipeline(transaction=False)
            for name, n in counts.items():
                pipe.hincrby(keys.replay_run(run), name, n)
            pipe.execute()
        if on_progress is not None:
            on_progress(i + len(part))
    return totals


def _replay_slice(client: redis.Redis, keys: Keys, scripts: Scripts, partition: int,
                  ids: list[str], output: str) -> dict[str, int]:
    counts = {"replayed": 0, "already": 0, "gone": 0}
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.dlq_replayed(partition), ids)
    for entry_id in ids:
        pipe.xrange(keys.dlq(partition), entry_id, entry_id)
    marks, *found = pipe.execute()
    entries = []
    for entry_id, mark, hit in zip(ids, marks, found, strict=True):
        if mark is not None:
            counts["already"] += 1
        elif not hit:
            counts["gone"] += 1
        else:
            entries.append((entry_id, hit[0][1]))
    stamp = int(time.time() * 1000)
    for group in _groups(entries, output):
        while group.ids:
            if group.payload is not None:
                payload, version = group.payload, group.version
            else:
                payload, version = encode_records(group.records), FORMAT_VERSION
            res = scripts.replay(partition, group.ids, payload, stream=group.stream,
                                 address=group.address, version=version, now_ms=stamp)
            if res.status == "replayed":
                counts["replayed"] += len(group.ids)
                break
            # Another job got there first (or a purge): leave that one out, go again.
            counts[res.status] += 1
            group.drop(res.entry_id)
    return counts


def replay_chunk(prefix: str, partition: int, ids: list[str], output: str, run: str,
                 backlog_limit: int = 0) -> dict[str, int]:
    """The RQ job: replay one chunk on the Redis the job came from (see module doc)."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("replay_chunk runs as an RQ job; call replay_ids() directly instead")
    client = job.connection
    keys = Keys(prefix)

    def progress(done: int) -> None:
        job.meta["done"] = done
        job.save_meta()  # type: ignore[no-untyped-call]

    totals = replay_ids(client, keys, partition, ids, output=output,
                        backlog_limit=backlog_limit, run=run, on_progress=progress)
    client.hset(keys.replay_run(run), f"done:{job.id}", 1)  # idempotent if retried
    return totals


def run_progress(client: redis.Redis, keys: Keys, run: str) -> dict[str, Any] | None:
    """The progress hash of ``run`` (``None`` when unknown or expired)."""
    raw: Any = client.hgetall(keys.replay_run(run))
    if not raw:
        return None
    out: dict[str, Any] = {"run": run, "jobs_done": 0}
    for k, v in raw.items():
        name, text = k.decode(), v.decode()
        if name.startswith("done:"):
            out["jobs_done"] += 1
            continue
        out[name] = int(text) if text.lstrip("-").isdigit() else text
    out["done"] = out.get("replayed", 0) + out.get("already", 0) + out.get("gone", 0)
    return out

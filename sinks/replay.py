"""Dead-letter replay as RQ jobs: resumable, visible, retried, and never twice.

``tailrace dlq replay`` plans a *run*: it lists the selected dead letters (without their
payloads), leaves out those replayed before, cuts the rest into chunks of one partition
each and enqueues one RQ job per chunk on the pipeline's ``replay`` queue. A job
(:func:`replay_chunk`) calls the REPLAY script on slices of its ids; the script puts each
entry back where it will be delivered once and marks it replayed in the same step:

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
from typing import Any

import redis
from rq import Queue, Retry, get_current_job
from rq.job import Job

from tailrace import scripts
from tailrace.keys import Keys

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
_SLICE = 100  # ids per script call
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


def replay_ids(client: redis.Redis, keys: Keys, partition: int, ids: Iterable[str], *,
               output: str = "", backlog_limit: int = 0, run: str | None = None,
               on_progress: Any = None) -> dict[str, int]:
    """Replay dead letters ``ids`` of ``partition``, each at most once (see module doc).

    Waits while the target stream's backlog is over ``backlog_limit`` entries (0 = never):
    a large replay pushes back like any producer.

    Returns:
        counts: ``replayed``, ``already`` (by an earlier run or attempt), ``gone`` (purged).
    """
    script = client.register_script(scripts.REPLAY)
    todo = list(ids)
    totals = {"replayed": 0, "already": 0, "gone": 0}
    for i in range(0, len(todo), _SLICE):
        part = todo[i : i + _SLICE]
        while backlog_limit and max(int(client.xlen(keys.out(partition))),
                                    int(client.xlen(keys.raw(partition)))) >= backlog_limit:
            time.sleep(_BACKLOG_WAIT_S)
        replayed, already, gone = (int(x) for x in script(
            keys=[keys.dlq(partition), keys.raw(partition), keys.out(partition),
                  keys.dlq_replayed(partition)],
            args=[output, int(time.time() * 1000), *part]))
        totals["replayed"] += replayed
        totals["already"] += already
        totals["gone"] += gone
        if run is not None:
            pipe = client.pipeline(transaction=False)
            for name, n in (("replayed", replayed), ("already", already), ("gone", gone)):
                pipe.hincrby(keys.replay_run(run), name, n)
            pipe.execute()
        if on_progress is not None:
            on_progress(i + len(part))
    return totals


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

"""The agent loop: tail inputs -> idempotent producer -> raw streams.

One thread does everything, in passes: re-scan globs when due, read a budget from every
file, commit every sealed batch in one pipeline of PRODUCE scripts (offset check + XADD +
offset move, atomically), then wait briefly when idle. Backpressure (a partition's backlog
or Redis memory over its limit) and broker outages stop reading: the files are the buffer,
and the agent holds at most one batch per file.
"""

from __future__ import annotations

import logging
import re
import time

import redis

from tailrace.broker import BROKER_ERRORS, ProduceResult, Scripts
from tailrace.config import Config
from tailrace.logs import RateLimiter, event
from tailrace.retry import Backoff
from tailrace.runtime import Runtime
from tailrace.wire import encode_raw

from .checkpoint import Checkpoint
from .tail import TailedFile, TailInput

__all__ = ["Agent"]

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_S = 5.0
MEMORY_CHECK_INTERVAL_S = 1.0
THROTTLE_RECHECK_S = 0.25
IDLE_WAIT_MIN_S = 0.005
IDLE_WAIT_MAX_S = 0.25


class Agent:
    """Runs every input of the config on this node until the runtime's stop event."""

    def __init__(self, config: Config, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.keys = runtime.keys
        self.service = config.service
        self.agent_id = config.service.agent_name
        self.record = runtime.lifecycle.thread("tail")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.agent_id)
        self.checkpoint_path = config.data_dir / f"agent-{safe}" / "checkpoints.json"
        self.checkpoint = Checkpoint.load(self.checkpoint_path)
        self.inputs: list[TailInput] = []
        for pc in config.inputs:
            self.inputs.append(
                pc.plugin(pc.options, agent=self.agent_id, input_id=pc.id,
                          partitions=self.service.partitions, base_dir=config.base_dir,
                          counters=self.record.add)
            )
        self.throttled: dict[int, float] = {}  # partition -> when to try again
        self.memory_full = False
        self._next_memory_check = 0.0
        self._next_checkpoint = 0.0
        self._dirty = False
        self._limiter = RateLimiter()

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> None:
        client = self.runtime.connect()
        scripts = Scripts(client, self.keys)
        stop = self.runtime.stop
        backoff = Backoff()
        idle = IDLE_WAIT_MIN_S
        self.record.set_state("active")
        while not stop.is_set():
            try:
                progressed = self._pass(client, scripts)
                backoff.reset()
            except BROKER_ERRORS as exc:
                self.record.set_state("broker_down", str(exc))
                if self._limiter.allow("broker"):
                    event(log, logging.WARNING, "agent_broker_error",
                          f"broker unreachable, holding batches and retrying: {exc}")
                stop.wait(backoff.next_delay())
                continue
            if progressed:
                idle = IDLE_WAIT_MIN_S
                continue
            deadline = min((inp.next_deadline() for inp in self.inputs), default=0.0)
            wait = max(IDLE_WAIT_MIN_S, min(idle, deadline - time.monotonic()))
            stop.wait(wait)
            idle = min(idle * 2, IDLE_WAIT_MAX_S)
        self._shutdown(client, scripts)

    def _pass(self, client: redis.Redis, scripts: Scripts) -> bool:
        now = time.monotonic()
        for inp in self.inputs:
            if inp.due_scan(now):
                new, first = inp.scan(now)
                if new:
                    self._start_files(client, inp, new, first)
        self._check_memory(client, now)
        throttled = self._throttled_now(now)
        ready: list[tuple[TailInput, TailedFile]] = []
        for inp in self.inputs:
            ready.extend((inp, tf) for tf in inp.poll(now, throttled))
        if ready:
            self._produce(scripts, ready)
        elif throttled or self.memory_full:
            self.record.set_state("throttled", self._throttle_reason(throttled))
        else:
            self.record.set_state("idle" if not self._buffered() else "active")
        if now >= self._next_checkpoint:
            self._save_checkpoint()
            self._next_checkpoint = now + CHECKPOINT_INTERVAL_S
        return bool(ready)

    def _buffered(self) -> bool:
        return any(tf.lines for inp in self.inputs for tf in inp.files.values())

    # -- starting files ---------------------------------------------------------------------
    def _start_files(self, client: redis.Redis, inp: TailInput, new: list[TailedFile],
                     first: bool) -> None:
        pipe = client.pipeline(transaction=False)
        for tf in new:
            pipe.hget(self.keys.offsets(tf.partition), tf.identity)
        stored = pipe.execute()
        resets = []
        for tf, value in zip(new, stored, strict=True):
            committed = int(value) if value is not None else None
            if inp.start(tf, committed, self.checkpoint.get(tf.identity), first):
                resets.append(tf)
            event(log, logging.INFO, "tail_file_opened",
                  f"following {tf.path} from byte {tf.pos}", input=inp.input_id,
                  partition=tf.partition, file=tf.identity)
        if resets:
            # Only this agent writes its files' fields (the identity includes the agent id).
            pipe = client.pipeline(transaction=False)
            for tf in resets:
                pipe.hset(self.keys.offsets(tf.partition), tf.identity, 0)
            pipe.execute()

    # -- producing ----------------------------------------------------------------------------
    def _produce(self, scripts: Scripts, ready: list[tuple[TailInput, TailedFile]]) -> None:
        limit = self.service.backlog.max_entries_per_partition
        pipe = scripts.client.pipeline(transaction=False)
        for _inp, tf in ready:
            batch = tf.sealed
            assert batch is not None
            payload = encode_raw(batch) if batch.lines else b""
            scripts.produce(tf.partition, tf.identity, batch.start, batch.end, payload, limit,
                            client=pipe)
        results = pipe.execute(raise_on_error=False)
        now = time.monotonic()
        rec = self.record
        committed = 0
        for (inp, tf), raw in zip(ready, results, strict=True):
            if isinstance(raw, redis.exceptions.ResponseError):
                # e.g. OOM from maxmemory: treat as backpressure on that partition.
                self.throttled[tf.partition] = now + THROTTLE_RECHECK_S
                if self._limiter.allow(f"produce-error-{tf.partition}"):
                    event(log, logging.WARNING, "agent_produce_error",
                          f"Redis refused a batch of {tf.path} for partition {tf.partition}: "
                          f"{raw}; holding it and retrying", partition=tf.partition)
                continue
            if isinstance(raw, BaseException):
                raise raw
            result = ProduceResult.parse(raw)
            if result.status == "ok":
                batch = inp.on_committed(tf)
                self.checkpoint.record(tf.identity, batch.end, tf.path)
                self._dirty = True
                committed += 1
                rec.add("lines_out", len(batch.lines))
                rec.add("bytes_out", batch.end - batch.start)
                rec.add("batches")
            elif result.status == "conflict":
                rec.add("conflicts")
                event(log, logging.INFO, "agent_offset_conflict",
                      f"{tf.path}: Redis has offset {result.offset} where this batch starts at "
                      f"{tf.sealed.start if tf.sealed else '?'}; resuming there (a previous run "
                      "committed it)", partition=tf.partition, file=tf.identity)
                inp.on_conflict(tf, result.offset)
                self.checkpoint.record(tf.identity, result.offset, tf.path)
            else:
                self.throttled[tf.partition] = now + THROTTLE_RECHECK_S
        if committed:
            rec.set_state("active")

    # -- backpressure -------------------------------------------------------------------------
    def _throttled_now(self, now: float) -> set[int]:
        if self.memory_full:
            return set(range(self.service.partitions))
        for p in [p for p, t in self.throttled.items() if t <= now]:
            del self.throttled[p]  # retry its held batch on this pass
        return set(self.throttled)

    def _throttle_reason(self, throttled: set[int]) -> str:
        if self.memory_full:
            return "Redis memory over its limit (service.backlog.max_redis_memory)"
        return (f"backlog over {self.service.backlog.max_entries_per_partition} batches on "
                f"partitions {sorted(throttled)}")

    def _check_memory(self, client: redis.Redis, now: float) -> None:
        if now < self._next_memory_check:
            return
        self._next_memory_check = now + MEMORY_CHECK_INTERVAL_S
        info = client.info("memory")
        used = int(info.get("used_memory", 0))
        limit = self.service.backlog.max_redis_memory
        if not limit and int(info.get("maxmemory", 0)):
            limit = int(int(info["maxmemory"]) * 0.9)
        full = bool(limit) and used >= limit
        if full != self.memory_full:
            event(log, logging.WARNING if full else logging.INFO, "agent_memory_throttle",
                  f"Redis uses {used} bytes (limit {limit}): "
                  + ("pausing reads" if full else "resuming reads"))
        self.memory_full = full

    # -- state --------------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        if not self._dirty:
            return
        live = {tf.identity for inp in self.inputs for tf in inp.files.values()}
        self.checkpoint.remove_expired(live)
        try:
            self.checkpoint.save(self.checkpoint_path)
            self._dirty = False
        except OSError as exc:
            if self._limiter.allow("checkpoint"):
                event(log, logging.ERROR, "agent_checkpoint_error",
                      f"cannot write {self.checkpoint_path}: {exc.strerror}; Redis still holds "
                      "the committed offsets")

    def _shutdown(self, client: redis.Redis, scripts: Scripts) -> None:
        """Commit what is buffered (one pass, if the broker answers), save, close files."""
        self.record.set_state("draining")
        ready: list[tuple[TailInput, TailedFile]] = []
        for inp in self.inputs:
            for tf in inp.files.values():
                if tf.sealed is None and (tf.lines or tf.pos != tf.committed):
                    inp._seal(tf)  # noqa: SLF001 - final flush of a partial batch
                if tf.sealed is not None:
                    ready.append((inp, tf))
        if ready:
            try:
                self._produce(scripts, ready)
            except BROKER_ERRORS as exc:
                event(log, logging.WARNING, "agent_final_flush_error",
                      f"could not commit buffered lines on shutdown ({exc}); they are read "
                      "again on the next start")
        self._save_checkpoint()
        for inp in self.inputs:
            inp.close()
        self.record.set_state("stopped")



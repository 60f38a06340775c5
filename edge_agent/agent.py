"""The agent loop: tail inputs -> idempotent producer -> raw streams.

One thread does everything, in passes: re-scan paths when due (or when inotify says
files appeared or left), read up to a batch from every file in turn, commit every sealed
batch in one pipeline of PRODUCE scripts (offset check + XADD + offset move, atomically),
then wait until a file changes or a timer is due. Backpressure (a partition's backlog or
Redis memory over its limit) and broker outages stop reading: the files are the buffer,
each file holds at most one batch, and each input at most ``mem_buf_limit`` bytes.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import TYPE_CHECKING, Any

import redis

from tailrace.broker import BROKER_ERRORS
from tailrace.config import Config
from tailrace.errors import StopRequested
from tailrace.lifecycle import State
from tailrace.logs import RateLimiter, event
from tailrace.retry import Backoff
from tailrace.scriptcalls import ProduceResult, Scripts
from tailrace.wire import encode_raw

from .checkpoint import Checkpoint, checkpoint_path
from .followed import TailedFile
from .inotify import Watcher
from .offsets import Offsets
from .pressure import THROTTLE_RECHECK_S, Backpressure
from .recovery import Recovery
from .starting import Starter
from .tail import TailInput, file_input

if TYPE_CHECKING:  # the CLI builds the runtime; importing the agent need not load it
    from tailrace.runtime import Runtime

__all__ = ["Agent"]

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_S = 5.0
# How often the committed offsets are compared with Redis's: a Redis that restarted without
# its last writes (AOF everysec) or failed over to a replica that missed them has moved
# offsets back, and a file that gets no new line would never meet a CONFLICT to say so.
VERIFY_INTERVAL_S = 5.0
IDLE_WAIT_MIN_S = 0.002
IDLE_WAIT_MAX_S = 0.25
WATCHED_IDLE_WAIT_MAX_S = 0.5  # inotify wakes the loop on changes: it may sleep longer
FILES_PUBLISH_INTERVAL_S = 1.0
MAX_FILES_SHOWN = 50  # per-file rows in the published state (the most behind first)
WATCH_REFRESH_SCANS = 10
PIPELINE_BYTES = 4 * 1024 * 1024  # payload bytes per PRODUCE pipeline
FD_RESERVE = 64  # descriptors kept for Redis, logs, inotify and the embedded server


class Agent:
    """Runs every input of the config on this node until the runtime's stop event."""

    def __init__(self, config: Config, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.keys = runtime.keys
        self.service = config.service
        self.agent_id = config.service.agent_name
        # This thread's lifecycle entry (state and counters in status; not a log record).
        self.status = runtime.lifecycle.thread("tail")
        self.checkpoint_path = checkpoint_path(config.data_dir, self.agent_id)
        had_checkpoint = (self.checkpoint_path.exists()
                          or self.checkpoint_path.with_suffix(".json.tmp").exists())
        self.checkpoint = Checkpoint.load(self.checkpoint_path)
        # The one writer of the files' committed offsets (Redis's answers) and their saves.
        self.offsets = Offsets(self.checkpoint, self.checkpoint_path, self.keys,
                               self.service.partitions, self.status.add)
        self.starter = Starter(self.keys, self.checkpoint, self.agent_id, had_checkpoint)
        self.recovery: Recovery | None = Recovery(self.checkpoint, self.agent_id,
                                                  self.checkpoint_path.parent)
        fd_budget = _raise_fd_limit(config) // max(1, len(config.inputs))
        self.inputs: list[TailInput] = [
            file_input(pc.plugin(pc.options, agent=self.agent_id, input_id=pc.id,
                                 partitions=self.service.partitions, base_dir=config.base_dir,
                                 counters=self.status.add, fd_budget=fd_budget))
            for pc in config.inputs
        ]
        self.pipeline_bytes = min([PIPELINE_BYTES] + [inp.opts.mem_buf_limit
                                                      for inp in self.inputs])
        self.watcher: Watcher | None = None
        self.pressure = Backpressure(self.service.backlog, self.service.partitions)
        self._next_checkpoint = 0.0
        self._next_publish = 0.0
        self._next_verify = 0.0
        self._limiter = RateLimiter()

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> None:
        """Tail until the runtime's stop event, then flush, commit and close (never raises
        for broker outages: they are waited out with capped backoff)."""
        try:
            client = self.runtime.connect()
        except StopRequested:
            return  # stopped while the broker was still down: nothing read, nothing to flush
        scripts = Scripts(client, self.keys, wait=self.runtime.wait_policy)
        if any(inp.opts.inotify for inp in self.inputs):
            self.watcher = Watcher.create()
        stop = self.runtime.stop
        backoff = Backoff()
        idle = IDLE_WAIT_MIN_S
        self.status.set_state(State.ACTIVE)
        try:
            while not stop.is_set():
                try:
                    progressed = self._pass(client, scripts)
                    backoff.reset()
                except BROKER_ERRORS as exc:
                    self.status.set_state(State.BROKER_DOWN, str(exc))
                    if self._limiter.allow("broker"):
                        event(log, logging.WARNING, "agent_broker_error",
                              f"broker unreachable, holding batches and retrying: {exc}")
                    self._next_verify = 0.0  # it may come back without its last writes
                    stop.wait(backoff.next_delay())
                    continue
                if progressed:
                    idle = IDLE_WAIT_MIN_S
                    continue
                self._wait(idle)
                idle = min(idle * 2, IDLE_WAIT_MAX_S)
            self._shutdown(client, scripts)
        finally:
            for inp in self.inputs:
                inp.close()
            if self.watcher is not None:
                self.watcher.close()

    def _wait(self, idle: float) -> None:
        now = time.monotonic()
        deadline = min((inp.next_deadline(now) for inp in self.inputs), default=now + idle)
        if self.watcher is None:
            self.runtime.stop.wait(max(IDLE_WAIT_MIN_S, min(idle, deadline - now)))
            return
        cap = WATCHED_IDLE_WAIT_MAX_S if not self.pressure.throttled else THROTTLE_RECHECK_S
        self.watcher.wait(max(IDLE_WAIT_MIN_S, min(cap, deadline - now)))

    def _pass(self, client: redis.Redis, scripts: Scripts) -> bool:
        """One pass: scan, start new files, read, commit, then what is due on a timer."""
        now = time.monotonic()
        self.starter.first_start(client)
        self._watch_events(now)
        self._scan(now)
        if self.recovery is not None:  # once, after every input's first scan
            self._recover(now)
        for inp in self.inputs:
            self._retire(client, inp)  # left over by a broker error: before any new file
            self._start_waiting(client, inp)
        pressure = self.pressure
        pressure.check_memory(client, now)
        throttled = pressure.throttled_now(now)
        ready: list[TailedFile] = []
        for inp in self.inputs:
            ready.extend(inp.poll(now, throttled))
            self._retire(client, inp)
        if ready:
            self._produce(scripts, ready)
        elif throttled or pressure.memory_full:
            self.status.set_state(State.THROTTLED, pressure.reason(throttled))
        else:
            self.status.set_state(State.IDLE if not self._buffered() else State.ACTIVE)
        self._timers(client, now)
        return bool(ready)

    def _scan(self, now: float) -> None:
        for inp in self.inputs:
            table = inp.table
            if table.due_scan(now):
                table.scan(now)
                if self.watcher is not None and (table.layout_changed
                                                 or table.scans % WATCH_REFRESH_SCANS == 0):
                    table.watched = self.watcher.watch(table.watch_dirs())

    def _recover(self, now: float) -> None:
        recovery, self.recovery = self.recovery, None
        assert recovery is not None
        try:
            recovery.run(self.inputs, now)
        except Exception as exc:  # a best-effort look at old files must not stop tailing
            self.status.add("files_lost")
            event(log, logging.ERROR, "tail_recovery_error",
                  f"looking for files rotated while the agent was down failed ({exc!r}); "
                  "lines written to them after the stop may be lost. Following the "
                  "files the inputs match now")

    def _start_waiting(self, client: redis.Redis, inp: TailInput) -> None:
        """Place the input's new files (Redis, else the checkpoint) and start them."""
        waiting = inp.table.take_waiting()
        if not waiting:
            return
        pinned = [tf for tf in waiting if tf.ident.pinned is not None]
        others = [tf for tf in waiting if tf.ident.pinned is None]
        try:
            if pinned:  # rotated while the agent was down (see recovery.py)
                starts, lost = self.starter.resume(client, pinned, input_id=inp.input_id)
                inp.begin(starts)
                for tf in lost:
                    inp.table.drop_recovered(tf)
            if others:
                inp.begin(self.starter.start(client, others, input_id=inp.input_id,
                                             read_from_head=inp.opts.read_from_head))
        except BROKER_ERRORS:
            inp.table.requeue([tf for tf in waiting if not tf.started])
            raise

    def _timers(self, client: redis.Redis, now: float) -> None:
        """Publish the files' state, save the checkpoint, compare offsets with Redis."""
        if now >= self._next_publish:
            self._publish_files()
            self._next_publish = now + FILES_PUBLISH_INTERVAL_S
        if self.starter.changed:  # new generations go into the local checkpoint at once
            self.starter.changed = False
            self.offsets.mark_changed()
        if self.offsets.save_now:
            self._next_checkpoint = 0.0
        if now >= self._next_checkpoint:
            self.offsets.save(self.inputs, client)
            self._next_checkpoint = now + CHECKPOINT_INTERVAL_S
        if now >= self._next_verify:  # see VERIFY_INTERVAL_S
            self.offsets.verify(self.inputs, client)
            self._next_verify = now + VERIFY_INTERVAL_S

    def _retire(self, client: redis.Redis, inp: TailInput) -> None:
        """Move deleted, closed files to their next generation. Done before new files start:
        a new file may reuse the inode (and first line), and must not get the old identity."""
        retired = inp.table.take_retired()
        if retired:
            try:
                self.starter.retire(client, retired)
            except BROKER_ERRORS:
                inp.table.retired.extend(retired)
                raise

    def _watch_events(self, now: float) -> None:
        w = self.watcher
        if w is None:
            return
        events = w.read()
        if w.overflowed:
            w.overflowed = False
            for inp in self.inputs:
                inp.table.rescan_all(now)
        elif events:
            for inp in self.inputs:
                inp.table.on_events(events, now)

    def _buffered(self) -> bool:
        return any(tf.buf.lines or tf.buf.carry
                   for inp in self.inputs for tf in inp.table.files.values())

    # -- producing ----------------------------------------------------------------------------
    def _produce(self, scripts: Scripts, ready: list[TailedFile]) -> None:
        """Commit sealed batches, one pipeline per ``PIPELINE_BYTES`` of payload (so the
        encoded copies never pile up in memory)."""
        group: list[TailedFile] = []
        size = 0
        for tf in ready:
            batch = tf.out.sealed
            assert batch is not None
            group.append(tf)
            size += batch.end - batch.start
            if size >= self.pipeline_bytes:
                self._produce_group(scripts, group)
                group, size = [], 0
        if group:
            self._produce_group(scripts, group)

    def _produce_group(self, scripts: Scripts, ready: list[TailedFile]) -> None:
        limit = self.service.backlog.max_entries_per_partition
        pipe = scripts.batch(wait=True)  # one round trip per Redis node, WAIT if configured
        for tf in ready:
            batch = tf.out.sealed
            assert batch is not None
            payload = encode_raw(batch) if batch.lines else b""
            scripts.produce(tf.partition, batch.file, batch.start, batch.end, payload, limit,
                            client=pipe, memory_limit=self.service.backlog.max_redis_memory)
        results = pipe.execute()
        now = time.monotonic()
        committed = 0
        for tf, raw in zip(ready, results, strict=True):
            if isinstance(raw, redis.exceptions.ResponseError):
                # e.g. OOM from maxmemory: treat as backpressure on that partition.
                self.pressure.throttle(tf.partition, now)
                if self._limiter.allow(f"produce-error-{tf.partition}"):
                    event(log, logging.WARNING, "agent_produce_error",
                          f"Redis refused a batch of {tf.path} for partition {tf.partition}: "
                          f"{raw}; holding it and retrying", partition=tf.partition)
                continue
            if isinstance(raw, BaseException):
                raise raw
            committed += self._answered(tf, ProduceResult.parse(raw), now)
        if committed:
            self.status.set_state(State.ACTIVE)

    def _answered(self, tf: TailedFile, result: ProduceResult, now: float) -> bool:
        """Redis's answer to ``tf``'s batch; returns whether it was committed."""
        status = self.status
        if result.status == "ok":
            batch = self.offsets.committed(tf)
            status.add("lines_out", len(batch.lines))
            status.add("bytes_out", batch.end - batch.start)
            status.add("batches")
            return True
        if result.status == "conflict":
            status.add("conflicts")
            sealed = tf.out.sealed
            event(log, logging.INFO, "agent_offset_conflict",
                  f"{tf.path}: Redis has offset {result.offset} where this batch starts at "
                  f"{sealed.start if sealed else '?'}; resuming there (a previous run "
                  "committed it)", partition=tf.partition, file=tf.identity)
            self.offsets.moved_to(tf, result.offset)
            return False
        self.pressure.throttle(tf.partition, now)
        if result.status == "memory" and self.pressure.memory_refused(now):
            event(log, logging.WARNING, "agent_memory_throttle",
                  f"Redis refused a batch of {tf.path}: it uses {result.memory} "
                  "bytes, over service.backlog.max_redis_memory (default 90% of "
                  "maxmemory): pausing reads", partition=tf.partition)
        return False

    # -- state --------------------------------------------------------------------------------
    def _publish_files(self) -> None:
        """Per-file offsets and bytes behind into the published status (bounded)."""
        rows: list[dict[str, Any]] = []
        for inp in self.inputs:
            for row in inp.table.file_states():
                row["input"] = inp.input_id
                rows.append(row)
        rows.sort(key=lambda r: -int(r["behind"]))
        self.runtime.lifecycle.extra["files"] = {
            "total": len(rows),
            "open": sum(inp.table.open_count for inp in self.inputs),
            "bytes_behind": sum(int(r["behind"]) for r in rows),
            "shown": rows[:MAX_FILES_SHOWN],
        }

    def _shutdown(self, client: redis.Redis, scripts: Scripts) -> None:
        """Flush pending messages, commit what is buffered (one pass, if the broker answers),
        save the checkpoint."""
        self.status.set_state(State.DRAINING)
        ready = [tf for inp in self.inputs for tf in inp.seal_all()]
        if ready:
            try:
                self._produce(scripts, ready)
            except BROKER_ERRORS as exc:
                event(log, logging.WARNING, "agent_final_flush_error",
                      f"could not commit buffered lines on shutdown ({exc}); they are read "
                      "again on the next start")
        self.offsets.save(self.inputs, None)
        self._publish_files()
        self.status.set_state(State.STOPPED)


def _raise_fd_limit(config: Config) -> int:
    """Raise the soft descriptor limit toward what the inputs may open; returns the number
    of descriptors the inputs may use."""
    want = sum(getattr(pc.options, "max_open_files", 0) for pc in config.inputs) + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return want
    return max(16, soft - FD_RESERVE)

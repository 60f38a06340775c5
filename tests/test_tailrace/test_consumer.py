"""The shared consumer loop, in-process against a real Redis, with a minimal handler."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis
from helpers import load_test_config, wait_for
from redis_server import RedisServer

from tailrace.broker import ensure_groups
from tailrace.consumer import StreamConsumer
from tailrace.errors import Fenced
from tailrace.handler import Entry, HandleResult, LeaseGuard
from tailrace.keys import PROCESSORS_GROUP, Keys
from tailrace.lifecycle import Lifecycle, Publisher


class Recorder:
    """Records what it is handed; can fail on chosen payloads or on acquiring."""

    overlap_commits = True  # as a processor: commits in flight over the next read

    def __init__(self, fail_payloads: set[bytes] = frozenset(),  # type: ignore[assignment]
                 fence_on_acquire: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.seen: list[bytes] = []
        self.fail_payloads = fail_payloads
        self.fence_on_acquire = set(fence_on_acquire)
        self.acquired: list[int] = []

    def on_acquire(self, partition: int, checkpoints: list[Mapping[bytes, bytes]]) -> None:
        self.acquired.append(partition)
        if partition in self.fence_on_acquire:
            self.fence_on_acquire.discard(partition)
            raise Fenced(PROCESSORS_GROUP, partition)

    def on_committed(self, partition: int) -> None:
        return None

    def handle(self, partition: int, entries: list[Entry], guard: LeaseGuard) -> HandleResult:
        for _id, fields in entries:
            assert fields is not None
            if fields[b"b"] in self.fail_payloads:
                raise RuntimeError(f"cannot handle {fields[b'b']!r}")
        self.seen += [f[b"b"] for _i, f in entries if f]
        return HandleResult(outputs=[f[b"b"] for _i, f in entries if f], lines_in=len(entries))

    def close(self) -> None:
        return None


@pytest.fixture
def pipeline(r: redis.Redis, prefix: str) -> tuple[Keys, Any]:
    cfg = load_test_config(f"service: {{prefix: {prefix}, partitions: 2, lease_ttl_ms: 1500, "
                           "heartbeat_ms: 200, max_deliveries: 3}\n")
    keys = Keys(prefix)
    ensure_groups(r, keys, 2, [])
    return keys, cfg.service


def run_consumer(r: redis.Redis, keys: Keys, service: Any, handler: Recorder
                 ) -> Iterator[tuple[StreamConsumer, threading.Thread]]:
    stop = threading.Event()
    c = StreamConsumer(r, keys, service, PROCESSORS_GROUP, handler, Lifecycle("processor"),
                       stage_in="raw", stage_out="out")
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    yield c, t
    stop.set()
    t.join(timeout=15)


def test_entries_are_handled_once_in_order_and_forwarded(r: redis.Redis,
                                                         pipeline: tuple[Keys, Any]) -> None:
    keys, service = pipeline
    sent = [f"e{i}".encode() for i in range(20)]
    for b in sent:
        r.xadd(keys.raw(0), {"v": "1", "b": b})
    h = Recorder()
    for _c, _t in run_consumer(r, keys, service, h):
        wait_for(lambda: len(h.seen) == 20, timeout=20, message="20 entries handled")
        assert h.seen == sent
        wait_for(lambda: r.xpending(keys.raw(0), PROCESSORS_GROUP)["pending"] == 0,
                 message="all acked")
    assert [f[b"b"] for _i, f in r.xrange(keys.out(0))] == sent


def test_a_new_worker_handles_its_first_entry_without_waiting_a_heartbeat(
        r: redis.Redis, prefix: str) -> None:
    # The loop's first look comes before the lease keeper's first acquisition; it used to
    # sleep a whole heartbeat then, which was most of the time to a first line.
    cfg = load_test_config(f"service: {{prefix: {prefix}, partitions: 2, lease_ttl_ms: 30000, "
                           "heartbeat_ms: 5000}\n")
    keys = Keys(prefix)
    ensure_groups(r, keys, 2, [])
    r.xadd(keys.raw(1), {"v": "1", "b": b"first"})
    h = Recorder()
    started = time.monotonic()
    for _c, _t in run_consumer(r, keys, cfg.service, h):
        wait_for(lambda: r.xlen(keys.out(1)) == 1, timeout=20, interval=0.01,
                 message="the first entry forwarded")
        took = time.monotonic() - started
    assert took < 2.5, f"first entry took {took:.2f} s: the worker waited for a heartbeat"


def test_a_batch_that_keeps_failing_is_dead_lettered_and_the_rest_goes_on(
        r: redis.Redis, pipeline: tuple[Keys, Any]) -> None:
    keys, service = pipeline
    r.xadd(keys.raw(1), {"v": "1", "b": b"poison"})
    r.xadd(keys.raw(0), {"v": "1", "b": b"fine"})
    h = Recorder(fail_payloads={b"poison"})
    for _c, _t in run_consumer(r, keys, service, h):
        wait_for(lambda: r.xlen(keys.dlq(1)) == 1, timeout=30, message="the poison in the DLQ")
        wait_for(lambda: b"fine" in h.seen, message="the other partition handled")
    dead = r.xrange(keys.dlq(1))[0][1]
    assert dead[b"b"] == b"poison" and b"cannot handle" in dead[b"error"]
    assert r.xpending(keys.raw(1), PROCESSORS_GROUP)["pending"] == 0


def test_a_lease_lost_during_recovery_does_not_stop_the_consumer(
        r: redis.Redis, pipeline: tuple[Keys, Any]) -> None:
    keys, service = pipeline
    h = Recorder(fence_on_acquire={0, 1})
    for _c, t in run_consumer(r, keys, service, h):
        wait_for(lambda: len(h.acquired) >= 2, timeout=20, message="both partitions tried")
        r.xadd(keys.raw(0), {"v": "1", "b": b"after"})
        r.xadd(keys.raw(1), {"v": "1", "b": b"after-1"})
        # The consumer survives; once the leases come round again it handles the entries.
        wait_for(lambda: set(h.seen) >= {b"after", b"after-1"}, timeout=30,
                 message="entries handled after the fenced recoveries")
        assert t.is_alive()


def test_a_consumer_that_dies_shows_failed_and_gives_its_partitions_back(
        r: redis.Redis, pipeline: tuple[Keys, Any]) -> None:
    keys, service = pipeline

    class Broken(Recorder):
        def on_acquire(self, partition: int, checkpoints: list[Mapping[bytes, bytes]]) -> None:
            raise SystemError("a bug")

    lifecycle = Lifecycle("processor")
    c = StreamConsumer(r, keys, service, PROCESSORS_GROUP, Broken(), lifecycle,
                       stage_in="raw", stage_out="out")
    with pytest.raises(SystemError):
        c.run(threading.Event())
    rec = lifecycle.threads["consumer"]
    assert rec.state == "failed" and "a bug" in rec.detail
    assert lifecycle.state == "failed"
    assert not any(r.exists(keys.lease(p, PROCESSORS_GROUP)) for p in range(2))


def fill_up(r: redis.Redis) -> list[str]:
    """Fill Redis with 4 MiB, then set a maxmemory (noeviction) 1 MiB below what it holds:
    every command that may grow memory is refused until the fillers are deleted."""
    if int(r.info("server")["redis_version"].split(".")[0]) < 7:
        pytest.skip("Redis before 7 lets scripts write past maxmemory: no OOM to meet")
    fillers = [f"filler{i}" for i in range(8)]
    for key in fillers:
        r.set(key, b"x" * 2**19)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", int(r.info("memory")["used_memory"]) - 2**20)
    return fillers


def start_consumer(r: redis.Redis, keys: Keys, service: Any, group: str, handler: Any,
                   stage_in: str) -> tuple[StreamConsumer, Lifecycle, threading.Event,
                                           threading.Thread]:
    lifecycle = Lifecycle("processor" if stage_in == "raw" else "sink")
    c = StreamConsumer(r, keys, service, group, handler, lifecycle, stage_in=stage_in,
                       stage_out="out", single_writer=False)
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    return c, lifecycle, stop, t


def test_redis_out_of_memory_holds_a_processor_back_until_memory_is_freed(
        fresh_redis: RedisServer, prefix: str) -> None:
    """maxmemory reached (noeviction): a processor's commits (XADD) are refused with OOM.
    That is backpressure: the loop waits and retries, keeps its leases (renewals still go
    through), dies of nothing, and commits everything once memory is back."""
    r = fresh_redis.client()
    cfg = load_test_config(f"service: {{prefix: {prefix}, partitions: 2, lease_ttl_ms: 1500, "
                           "heartbeat_ms: 200}\n")
    keys = Keys(prefix)
    ensure_groups(r, keys, 2, [])
    sent = [f"e{i}".encode() * 1000 for i in range(20)]
    for b in sent:
        r.xadd(keys.raw(0), {"v": "1", "b": b})
    fillers = fill_up(r)
    h = Recorder()
    c, lifecycle, stop, t = start_consumer(r, keys, cfg.service, PROCESSORS_GROUP, h, "raw")
    try:
        full = wait_for(lambda: [rec for rec in lifecycle.threads.values()
                                 if "Redis is full" in rec.detail], timeout=20,
                        message="the consumer held back by OOM, saying so")
        assert full[0].state == "throttled"  # backpressure, not an outage
        held = c.table.numbers()
        time.sleep(3 * 1.5)  # three lease TTLs while Redis stays full
        assert c.table.numbers() == held == [0, 1], "leases lapsed while full"
        assert r.xlen(keys.out(0)) == 0 and t.is_alive()
        r.delete(*fillers)
        wait_for(lambda: r.xlen(keys.out(0)) == len(sent), timeout=30,
                 message="everything committed once memory is back")
        assert t.is_alive() and lifecycle.state != "failed"
    finally:
        stop.set()
        t.join(timeout=15)
    assert [f[b"b"] for _i, f in r.xrange(keys.out(0))] == sent
    r.close()


class CheckpointingSink:
    """A sink-like handler: delivers nowhere, commits a checkpoint with its acks."""

    overlap_commits = False

    def __init__(self) -> None:
        self.seen = 0

    def on_acquire(self, partition: int, checkpoints: list[Mapping[bytes, bytes]]) -> None:
        return None

    def on_committed(self, partition: int) -> None:
        return None

    def handle(self, partition: int, entries: list[Entry], guard: LeaseGuard) -> HandleResult:
        self.seen += len(entries)
        return HandleResult(checkpoint={"seen": self.seen}, lines_in=len(entries))

    def close(self) -> None:
        return None


def test_a_full_redis_still_takes_a_sinks_commits_and_new_workers(
        fresh_redis: RedisServer, prefix: str) -> None:
    """Sinks are what frees memory (their acks let the streams be trimmed), so their commits
    (acks + checkpoint), a new worker's lease and membership, and the workers' published
    records must go through when Redis is full; otherwise a full Redis never drains."""
    r = fresh_redis.client()
    cfg = load_test_config(f"service: {{prefix: {prefix}, partitions: 2, lease_ttl_ms: 1500, "
                           "heartbeat_ms: 200}\n")
    keys = Keys(prefix)
    group = "sink:x"
    ensure_groups(r, keys, 2, [group])
    for i in range(30):
        r.xadd(keys.out(i % 2), {"v": "1", "b": b"r%d" % i})
    fillers = fill_up(r)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        r.hset("probe", "a", "b")  # Redis is full indeed
    h = CheckpointingSink()
    c, lifecycle, stop, t = start_consumer(r, keys, cfg.service, group, h, "out")
    publisher = Publisher(lifecycle, r, keys.worker(lifecycle.id), 1.0)
    try:
        wait_for(lambda: sum(r.xpending(keys.out(p), group)["pending"] for p in (0, 1)) == 0
                 and h.seen == 30, timeout=30, message="every entry acknowledged while full")
        assert {int(r.hget(keys.checkpoint(p, group), "seen") or 0) for p in (0, 1)} - {0}
        assert c.table.numbers() == [0, 1]
        publisher.publish()
        assert r.exists(keys.worker(lifecycle.id)), "the worker's record while full"
        assert lifecycle.state != "failed" and t.is_alive()
    finally:
        stop.set()
        t.join(timeout=15)
        r.delete(*fillers)
    r.close()


def test_a_takeover_claim_cut_short_by_a_broker_error_is_redone(
        r: redis.Redis, pipeline: tuple[Keys, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A previous owner left entries pending; the new owner's first XAUTOCLAIM meets a broker
    error. The claim must be redone before the partition is read: the pending entries are
    not new (``>``) and not this worker's own (``0``), so nothing else would ever read them."""
    keys, service = pipeline
    for i in range(3):
        r.xadd(keys.raw(0), {"v": "1", "b": b"left%d" % i})
    r.xreadgroup(PROCESSORS_GROUP, "gone-worker", {keys.raw(0): ">"}, count=10)
    from tailrace.consumer import batches
    real, calls = batches.claim_pending, []

    def flaky(*args: Any) -> int:
        calls.append(args)
        if len(calls) == 1:
            raise redis.exceptions.ConnectionError("connection reset while claiming")
        return real(*args)

    monkeypatch.setattr(batches, "claim_pending", flaky)
    h = Recorder()
    for _c, _t in run_consumer(r, keys, service, h):
        wait_for(lambda: len(h.seen) == 3, timeout=20,
                 message="the previous owner's pending entries handled after the failed claim")
    assert sorted(h.seen) == [b"left0", b"left1", b"left2"]
    assert r.xpending(keys.raw(0), PROCESSORS_GROUP)["pending"] == 0


def id_order(entry_id: bytes | str) -> tuple[int, ...]:
    """A stream id as numbers, to compare ids by their order in the stream."""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return tuple(int(part) for part in raw.split("-"))


class SlowCommits:
    """Wraps a consumer's commits (``send_commit``): the outcome of each is read no sooner
    than ``delay_s`` after it was sent (as for a commit Redis takes long over), and a hook
    can run before each is sent. Records when each was sent and when its outcome was in,
    and the last entry id of each (to see overlap with the handles of later entries)."""

    def __init__(self, consumer: StreamConsumer, delay_s: float,
                 before: Any = None) -> None:
        self.real = consumer.work.scripts.send_commit
        self.delay_s = delay_s
        self.before = before
        self.spans: list[tuple[float, float]] = []
        #: the last entry id of each commit, in the order of ``spans``
        self.last_ids: list[bytes] = []
        consumer.work.scripts.send_commit = self  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        if self.before is not None:
            self.before(len(self.spans))
        outcome = self.real(*args, **kwargs)
        last = max(kwargs["ids"], key=id_order)

        def read() -> int:
            time.sleep(max(0.0, began + self.delay_s - time.monotonic()))
            try:
                return int(outcome())
            finally:
                self.spans.append((began, time.monotonic()))
                self.last_ids.append(last)

        return read


class TimedRecorder(Recorder):
    """A Recorder that notes when each handle began; fails chosen payloads only once."""

    def __init__(self, fail_once: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__()
        self.fail_once = set(fail_once)
        self.began: list[float] = []
        #: (when the handle began, the first entry id it was given)
        self.firsts: list[tuple[float, bytes]] = []

    def handle(self, partition: int, entries: list[Entry], guard: LeaseGuard) -> HandleResult:
        self.began.append(time.monotonic())
        self.firsts.append((self.began[-1], entries[0][0]))
        for _id, fields in entries:
            assert fields is not None
            if fields[b"b"] in self.fail_once:
                self.fail_once.discard(fields[b"b"])
                raise RuntimeError(f"fails once: {fields[b'b']!r}")
        return super().handle(partition, entries, guard)


def add_at_once(r: redis.Redis, stream: str, payloads: list[bytes]) -> None:
    """XADD the payloads in one transaction, so a read takes several of them together."""
    pipe = r.pipeline(transaction=True)
    for b in payloads:
        pipe.xadd(stream, {"v": "1", "b": b})
    pipe.execute()


def out_payloads(r: redis.Redis, keys: Keys, p: int) -> list[bytes]:
    return [f[b"b"] for _i, f in r.xrange(keys.out(p))]


def test_a_live_commit_is_in_flight_while_the_next_entry_is_handled(
        r: redis.Redis, pipeline: tuple[Keys, Any]) -> None:
    """Overlap (a processor): one commit in flight at a time, in the entries' order, each
    entry forwarded once; the next read's handling starts before the commit's outcome is in."""
    keys, service = pipeline
    sent = [b"e%02d" % i for i in range(12)]
    h = TimedRecorder()
    for c, _t in run_consumer(r, keys, service, h):
        wait_for(c.table.all_live, timeout=20, message="partitions live")
        slow = SlowCommits(c, 0.15)
        add_at_once(r, keys.raw(0), sent)
        wait_for(lambda: len(out_payloads(r, keys, 0)) == len(sent), timeout=20,
                 message="every entry forwarded")
    assert out_payloads(r, keys, 0) == sent
    assert r.xpending(keys.raw(0), PROCESSORS_GROUP)["pending"] == 0
    spans = sorted(slow.spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), (
        "two commits were in flight")
    # A commit overlapped when the handle of later entries began before its outcome was in.
    overlapped = [last for (_b, ended), last in zip(slow.spans, slow.last_ids, strict=True)
                  if any(t < ended and id_order(first) > id_order(last) for t, first in h.firsts)]
    assert len(overlapped) >= len(sent) // 3, (
        f"only {len(overlapped)} of {len(spans)} commits overlapped a handle: the loop "
        "waited for each commit before handling the next entry")


def test_a_failure_behind_a_commit_in_flight_keeps_the_order(
        r: redis.Redis, pipeline: tuple[Keys, Any]) -> None:
    """An entry fails while the one before it is being committed: it and those read with it
    after it wait for history, so the output keeps the input's order, each once."""
    keys, service = pipeline
    sent = [b"e%02d" % i for i in range(10)]
    h = TimedRecorder(fail_once={b"e03", b"e06"})
    for c, _t in run_consumer(r, keys, service, h):
        wait_for(c.table.all_live, timeout=20, message="partitions live")
        SlowCommits(c, 0.1)
        add_at_once(r, keys.raw(0), sent)
        wait_for(lambda: len(out_payloads(r, keys, 0)) == len(sent), timeout=30,
                 message="every entry forwarded after the failures")
    assert out_payloads(r, keys, 0) == sent
    assert r.xlen(keys.dlq(0)) == 0


def test_a_commit_fenced_in_flight_drops_the_partition_and_loses_nothing(
        r: redis.Redis, pipeline: tuple[Keys, Any]) -> None:
    """Another worker takes the lease while a commit is in flight: the commit is fenced
    (nothing written), the entries read behind it are not committed either, and once the
    lease comes back every entry is forwarded exactly once, in order."""
    keys, service = pipeline
    sent = [b"e%02d" % i for i in range(8)]
    lease = keys.lease(0, PROCESSORS_GROUP)

    def steal(n: int) -> None:
        if n == 1:  # the second commit: the lease goes to a worker that then dies
            r.set(lease, "thief:999999", px=1500)

    h = TimedRecorder()
    for c, _t in run_consumer(r, keys, service, h):
        wait_for(c.table.all_live, timeout=20, message="partitions live")
        slow = SlowCommits(c, 0.1, before=steal)
        add_at_once(r, keys.raw(0), sent)
        wait_for(lambda: len(out_payloads(r, keys, 0)) == len(sent), timeout=30,
                 message="every entry forwarded once the stolen lease lapsed")
        assert len(slow.spans) > len(sent) // 2
    assert out_payloads(r, keys, 0) == sent
    assert r.xpending(keys.raw(0), PROCESSORS_GROUP)["pending"] == 0


class Watching(Recorder):
    """Notes, at each handle, whether the consumer's next read was already on its way."""

    def __init__(self) -> None:
        super().__init__()
        self.consumer: Any = None
        self.ahead: list[bool] = []

    def handle(self, partition: int, entries: list[Entry], guard: LeaseGuard) -> HandleResult:
        self.ahead.append(bool(self.consumer.reads.lanes.in_flight()))
        return super().handle(partition, entries, guard)


def test_the_worker_sends_its_next_read_before_handling_and_loses_nothing(
        r: redis.Redis, pipeline: tuple[Keys, Any]) -> None:
    keys, service = pipeline
    sent = [b"e%02d" % i for i in range(12)]
    h = Watching()
    for c, _t in run_consumer(r, keys, service, h):
        h.consumer = c
        wait_for(c.table.all_live, timeout=20, message="partitions live")
        add_at_once(r, keys.raw(0), sent)
        wait_for(lambda: len(out_payloads(r, keys, 0)) == len(sent), timeout=20,
                 message="every entry forwarded")
    assert out_payloads(r, keys, 0) == sent, "each entry once, in order"
    assert r.xpending(keys.raw(0), PROCESSORS_GROUP)["pending"] == 0, (
        "the stop left entries read ahead pending")
    assert sum(h.ahead) >= len(h.ahead) - 1, (
        f"the next read was on its way at only {sum(h.ahead)} of {len(h.ahead)} handles")

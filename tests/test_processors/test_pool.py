"""service.processor_helpers: a processor worker's entries handled by helper processes."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import msgpack
import psutil
import pytest
import redis
from helpers import Role, count_lines, read_json_lines, wait_for
from pconf import batch, config
from redis_server import RedisServer
from test_crash import settled
from test_e2e import assert_exactly_once, pipeline_config
from test_worker import NGINX, pipeline_yaml, poison_config

from processors.pool import HelperDied, PooledHandler
from processors.worker import ProcessorHandler
from tailrace.broker import ensure_groups
from tailrace.generate import Generator
from tailrace.handler import Entry, HandleResult
from tailrace.keys import PROCESSORS_GROUP, Keys, sink_group
from tailrace.lifecycle import Lifecycle
from tailrace.wire import decode_records, encode_raw


def entries(n: int) -> list[Entry]:
    """``n`` raw entries: good lines, a line the parser does not match, one the python
    filter refuses (dead letters both), at their own offsets."""
    out: list[Entry] = []
    for i in range(n):
        lines = [NGINX, "not an access line", NGINX.replace("/a", f"/bad{i}"), NGINX]
        b = batch(lines, offset=i * 10_000, file="file-0")
        b.time = 1_700_000_000.0 + i  # the read time, else each handler stamps its own now
        out.append((f"{i + 1}-0".encode(), {b"v": b"1", b"b": encode_raw(b)}))
    return out


def comparable(res: HandleResult) -> tuple[object, ...]:
    recs = [decode_records({b"v": b"2", b"b": o}) for o in res.outputs]
    dls = [(d.kind, d.stage, d.plugin, d.error, d.source, msgpack.unpackb(d.payload))
           for d in res.dead_letters]
    return recs, dls, res.lines_in, res.lines_out, res.bytes_in


@pytest.fixture
def pool(tmp_path: Path, prefix: str) -> tuple[ProcessorHandler, PooledHandler]:
    cfg = config(pipeline_yaml(tmp_path, prefix), filename=str(tmp_path / "p.yaml"))
    life = Lifecycle("processor")
    single = ProcessorHandler(cfg, life.thread("single"))
    pooled = PooledHandler(cfg, life.thread("pooled"), helpers=2)
    yield single, pooled
    pooled.close()


@pytest.mark.parametrize("n", [1, 2, 5])
def test_helpers_give_what_one_handler_gives_in_the_entries_order(
        pool: tuple[ProcessorHandler, PooledHandler], n: int) -> None:
    single, pooled = pool
    es = entries(n)
    want, got = single.handle(0, es, None), pooled.handle(0, es, None)  # type: ignore[arg-type]
    assert comparable(got) == comparable(want)
    assert len(got.outputs) == n and len(got.dead_letters) == 2 * n
    # What the filters count in the helpers reaches the worker's own status record.
    assert pooled.status.counters == single.status.counters
    assert pooled.status.counters, "the parser counted its unmatched lines"


def test_a_helper_that_dies_fails_its_entries_and_is_replaced(
        pool: tuple[ProcessorHandler, PooledHandler]) -> None:
    single, pooled = pool
    old = [h.pid for h in pooled.helpers]
    os.kill(old[1], signal.SIGKILL)
    with pytest.raises(HelperDied, match=f"helper {old[1]} ended while handling entry 2-0"):
        pooled.handle(0, entries(2), None)  # type: ignore[arg-type]
    assert pooled.helpers[0].pid == old[0] and pooled.helpers[1].pid != old[1]
    assert not psutil.pid_exists(old[1]) or psutil.Process(old[1]).status() == "zombie"
    es = entries(3)  # the next call goes through, and its results are in order
    want = single.handle(0, es, None)  # type: ignore[arg-type]
    assert comparable(pooled.handle(0, es, None)) == comparable(want)  # type: ignore[arg-type]


def test_closing_the_pool_ends_every_helper(tmp_path: Path, prefix: str) -> None:
    cfg = config(pipeline_yaml(tmp_path, prefix), filename=str(tmp_path / "p.yaml"))
    pooled = PooledHandler(cfg, Lifecycle("processor").thread("c"), helpers=3)
    pids = [h.pid for h in pooled.helpers]
    pooled.close()
    assert not any(psutil.pid_exists(p) for p in pids)


@pytest.mark.slow
def test_processors_with_helpers_sigkilled_mid_stream_deliver_every_line_once(
        tmp_path: Path, fresh_redis: RedisServer, prefix: str) -> None:
    """Two processor workers with two helpers each; one worker is SIGKILLed (alone: its
    helpers see their socket close and end), another started; every line arrives once."""
    total = 40_000
    cfg = pipeline_config(tmp_path, prefix, partitions=4, processor_helpers=2)
    out = tmp_path / "out" / "all.log"
    gen = Generator(tmp_path / "logs", files=2, fmt="plain", rate=4_000, total=total)
    gen_stop = threading.Event()
    gen_thread = threading.Thread(target=gen.run, args=(gen_stop,), daemon=True)
    url = fresh_redis.url
    roles = [Role("agent", cfg, url).start(), Role("processor", cfg, url).start(),
             Role("processor", cfg, url).start(), Role("sink", cfg, url).start()]
    gen_thread.start()
    try:
        wait_for(lambda: count_lines(out) >= 4_000, timeout=90, interval=0.1,
                 message="4000 records delivered")
        victim = psutil.Process(roles[1].proc.pid)
        wait_for(lambda: len(victim.children()) == 2, timeout=30, message="two helpers")
        helpers = victim.children()
        os.kill(victim.pid, signal.SIGKILL)  # the worker only, not its process group
        gone, alive = psutil.wait_procs(helpers, timeout=15)
        assert not alive, f"helpers outlived their worker: {alive}"
        roles.append(Role("processor", cfg, url).start())
        gen_thread.join(timeout=60)
        assert gen.written == total
        wait_for(lambda: count_lines(out) >= total, timeout=180, interval=0.25,
                 message=f"all {total} records after the kill")
        # Anything duplicated late would come from an entry still pending or unread.
        client = fresh_redis.client()
        wait_for(lambda: settled(client, Keys(prefix), 4,
                                 {"raw": PROCESSORS_GROUP, "out": sink_group("all")}),
                 timeout=60, interval=0.25, message="every entry read and acknowledged")
        client.close()
    finally:
        gen_stop.set()
        gen.close()
        codes = [r.stop() for r in roles if r.alive]
    assert all(c == 0 for c in codes), codes
    assert_exactly_once(read_json_lines(out), total)


def test_an_entry_that_crashes_a_helper_is_dead_lettered_alone_and_the_worker_goes_on(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    """A filter that kills its process (os._exit) on one entry: with helpers the worker
    survives, the entry is retried alone (history) and dead-lettered as failing after
    ``max_deliveries``; the entries read with it are delivered."""
    cfg = poison_config(tmp_path, prefix, processor_helpers=2)
    r = redis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    ensure_groups(r, keys, 1, [])
    pipe = r.pipeline(transaction=True)  # read together: one worker read takes them all
    for i, line in enumerate(["fine 1", "POISON", "fine 2", "fine 3"]):
        pipe.xadd(keys.raw(0), {"v": b"1", "b": encode_raw(batch([line], offset=i * 100))})
    pipe.execute()
    worker = Role("processor", cfg, redis_url).start()
    try:
        wait_for(lambda: r.xlen(keys.dlq(0)) == 1 and not r.xpending(
            keys.raw(0), PROCESSORS_GROUP)["pending"], timeout=60,
            message="the poison entry dead-lettered, the others committed")
        assert worker.alive, "the worker itself must survive its helper's crash"
    finally:
        code = worker.stop()
    assert code == 0
    [(_id, dl)] = r.xrange(keys.dlq(0))
    assert b"helper" in dl[b"error"] and b"ended while handling entry" in dl[b"error"]
    logs = sorted(rec["log"] for _i, f in r.xrange(keys.out(0)) for rec in decode_records(f))
    assert logs == ["fine 1", "fine 2", "fine 3"]
    r.close()


def test_a_frame_cut_short_by_a_signal_is_read_whole() -> None:
    """recv with MSG_WAITALL returns early when a signal handler runs (the worker gets
    SIGCHLD, SIGHUP...): the rest of the frame is still read, not taken for a dead helper."""
    from processors.pool import _Channel

    a, b = socket.socketpair()
    frame = os.urandom(300_000)

    def send_in_two() -> None:
        a.sendall(len(frame).to_bytes(4, "big") + frame[:1000])
        time.sleep(0.3)
        a.sendall(frame[1000:])

    seen: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda signum, _f: seen.append(signum))
    try:
        sender = threading.Thread(target=send_in_two)
        sender.start()
        signal.setitimer(signal.ITIMER_REAL, 0.1)  # lands while recv waits for the rest
        got = _Channel(b).recv()
        sender.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()
    assert seen == [signal.SIGALRM] and got == frame
    a2, b2 = socket.socketpair()
    a2.sendall((10).to_bytes(4, "big") + b"short")
    a2.close()
    with pytest.raises(EOFError):
        _Channel(b2).recv()
    b2.close()

"""Processor workers against a real Redis: commits, dead letters, poison, retention."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import redis
from helpers import Role, wait_for, write_config
from pconf import batch, config

from processors.worker import ProcessorHandler
from tailrace.broker import ensure_groups
from tailrace.consumer import StreamConsumer
from tailrace.keys import PROCESSORS_GROUP, Keys
from tailrace.lifecycle import Lifecycle
from tailrace.ratelimit import RedisRateLimits
from tailrace.wire import decode_records, encode_raw

FAILING = '''
def check(record):
    if "bad" in record["path"]:
        raise RuntimeError("refusing " + record["path"])
    return record
'''
NGINX = ('10.0.0.1 - - [10/Oct/2023:13:55:36 +0000] "GET /a HTTP/1.1" 200 12 "-" "curl"')


def poison_config(tmp: Path, prefix: str, **service: object) -> Path:
    """A pipeline whose python filter kills its process (os._exit(3)) on a POISON line."""
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "crash.py").write_text(
        "import os\n\ndef check(record):\n"
        "    if 'POISON' in record['log']:\n        os._exit(3)\n    return record\n")
    return write_config(tmp / "poison.yaml", {
        "service": {"prefix": prefix, "partitions": 1, "lease_ttl_ms": 1000,
                    "heartbeat_ms": 200, "max_deliveries": 2, **service},
        "pipeline": {"filters": [{"name": "python", "call": "crash:check",
                                  "path": str(tmp / "plugins")}]},
    })


def pipeline_yaml(tmp: Path, prefix: str, partitions: int = 2) -> str:
    (tmp / "plugins").mkdir(exist_ok=True)
    (tmp / "plugins" / "checks.py").write_text(FAILING)
    return f"""
service: {{prefix: {prefix}, partitions: {partitions}, lease_ttl_ms: 2000, heartbeat_ms: 200,
          max_deliveries: 2}}
pipeline:
  filters:
    - {{name: parser, alias: nginx, key: log, parser: nginx, unmatched: dead_letter}}
    - {{name: python, alias: checks, call: 'checks:check', path: plugins}}
    - {{name: modify, set: {{stage: done}}}}
"""


class Worker:
    """A processor worker (consumer loop + handler) in a thread of this process."""

    def __init__(self, tmp: Path, redis_url: str, prefix: str, **consumer: object) -> None:
        self.config = config(pipeline_yaml(tmp, prefix), filename=str(tmp / "p.yaml"))
        self.client = redis.Redis.from_url(redis_url)
        keys = Keys(prefix)
        ensure_groups(self.client, keys, self.config.service.partitions, [])
        life = Lifecycle("processor")
        self.handler = ProcessorHandler(self.config, life.thread("consumer"),
                                        rate_limits=RedisRateLimits(self.client, keys))
        self.status = life.thread("consumer")
        self.consumer = StreamConsumer(self.client, keys, self.config.service, PROCESSORS_GROUP,
                                       self.handler, life, stage_in="raw", kind="raw",
                                       block_ms=100, **consumer)  # type: ignore[arg-type]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.client.close()


def produce(r: redis.Redis, keys: Keys, partition: int, lines: list[str],
            offset: int = 0) -> None:
    b = batch(lines, offset=offset, file=f"file-{partition}")
    r.xadd(keys.raw(partition), {"v": b"1", "b": encode_raw(b)})


def acked_all(r: redis.Redis, keys: Keys, partitions: int) -> bool:
    for p in range(partitions):
        for g in r.xinfo_groups(keys.raw(p)):
            if g["name"] == PROCESSORS_GROUP.encode() and (
                    g["pending"] or g["lag"] not in (0, None)):
                return False
    return True


def out_records(r: redis.Redis, keys: Keys, partition: int) -> list[dict[str, object]]:
    return [rec for _, fields in r.xrange(keys.out(partition)) for rec in decode_records(fields)]


@pytest.fixture
def keys(prefix: str) -> Iterator[Keys]:
    yield Keys(prefix)


def test_a_failing_record_is_dead_lettered_and_the_batch_committed(
        tmp_path: Path, redis_url: str, r: redis.Redis, prefix: str, keys: Keys) -> None:
    with Worker(tmp_path, redis_url, prefix) as w:
        produce(r, keys, 0, [NGINX, NGINX.replace("/a", "/bad"), "not nginx", NGINX])
        r.xadd(keys.raw(1), {"v": b"1", "b": b"\xc1 not msgpack"})
        wait_for(lambda: acked_all(r, keys, 2), timeout=30, message="every entry acked")
        assert [rec["path"] for rec in out_records(r, keys, 0)] == ["/a", "/a"]
        assert all(rec["stage"] == "done" for rec in out_records(r, keys, 0))
        dlq = [fields for _, fields in r.xrange(keys.dlq(0))]
        by_plugin = {d[b"plugin"]: d for d in dlq}
        assert len(dlq) == 2 and set(by_plugin) == {b"checks", b"nginx"}
        assert b"RuntimeError('refusing /bad')" in by_plugin[b"checks"][b"error"]
        assert by_plugin[b"nginx"][b"error"] == b"parser 'nginx' did not match"
        [rec] = msgpack.unpackb(by_plugin[b"checks"][b"b"])
        assert rec["path"] == "/bad"
        [bad] = [fields for _, fields in r.xrange(keys.dlq(1))]
        assert bad[b"kind"] == b"raw" and b"not valid msgpack" in bad[b"error"]
        wait_for(lambda: w.status.counters.get("filter_errors") == 1, timeout=10,
                 message="filter errors counted in the lifecycle record")
        assert w.status.counters["filter_unmatched"] == 1


def test_raw_streams_are_trimmed_only_below_what_every_group_acknowledged(
        tmp_path: Path, redis_url: str, r: redis.Redis, prefix: str, keys: Keys) -> None:
    ensure_groups(r, keys, 2, [])
    r.xgroup_create(keys.raw(0), "archive", id="0")  # a second group that lags behind
    for i in range(6):
        produce(r, keys, 0, [NGINX], offset=i * 100)
    with Worker(tmp_path, redis_url, prefix, trim_interval_s=0.05):
        wait_for(lambda: acked_all(r, keys, 2), timeout=30, message="processors caught up")
        produce(r, keys, 0, [NGINX], offset=600)  # a read after the trim interval trims
        wait_for(lambda: acked_all(r, keys, 2), timeout=30, message="processors caught up")
        assert r.xlen(keys.raw(0)) == 7  # "archive" has acknowledged nothing
        got = r.xreadgroup("archive", "a1", {keys.raw(0): ">"}, count=4)
        r.xack(keys.raw(0), "archive", *[eid for eid, _ in got[0][1]])
        produce(r, keys, 0, [NGINX], offset=700)
        wait_for(lambda: r.xlen(keys.raw(0)) == 4, timeout=30,
                 message="trimmed down to what 'archive' has not acknowledged")


def test_an_entry_that_crashes_every_worker_is_dead_lettered_as_poison(
        tmp_path: Path, redis_url: str, r: redis.Redis, prefix: str, keys: Keys) -> None:
    cfg = poison_config(tmp_path, prefix)
    ensure_groups(r, keys, 1, [])
    produce(r, keys, 0, ["fine 1"])
    produce(r, keys, 0, ["POISON"], offset=100)
    produce(r, keys, 0, ["fine 2"], offset=200)
    crashes = 0
    while not r.xlen(keys.dlq(0)):
        worker = Role("processor", cfg, redis_url).start()
        wait_for(lambda w=worker: not w.alive or r.xlen(keys.dlq(0)), timeout=60,
                 message="the worker to crash on the poison entry or dead-letter it")
        if worker.alive:
            wait_for(lambda: acked_all(r, keys, 1), timeout=60, message="the rest processed")
            assert worker.stop() == 0
        else:
            assert worker.proc is not None and worker.proc.returncode == 3
            crashes += 1
        assert crashes <= 3, "poison entry was never dead-lettered"
    dlq = r.xrange(keys.dlq(0))
    assert len(dlq) == 1, [(d[b"error"], d[b"source"], d[b"b"][-30:]) for _, d in dlq]
    dl = dlq[0][1]
    assert b"poison" in dl[b"error"] and dl[b"kind"] == b"raw"
    assert crashes == 2  # max_deliveries
    assert sorted(rec["log"] for rec in out_records(r, keys, 0)) == ["fine 1", "fine 2"]


def test_workers_flag_and_another_host_share_the_partitions_fairly(
        tmp_path: Path, redis_url: str, r: redis.Redis, prefix: str, keys: Keys) -> None:
    cfg = write_config(tmp_path / "scale.yaml", {
        "service": {"prefix": prefix, "partitions": 8, "lease_ttl_ms": 2000,
                    "heartbeat_ms": 200},
        "pipeline": {"filters": [{"name": "modify", "set": {"x": 1}}]},
    })
    group = Role("processor", cfg, redis_url, "--workers", "3").start()
    other = Role("processor", cfg, redis_url).start()  # "another host"

    def owners() -> dict[str, int]:
        held: dict[str, int] = {}
        for p in range(8):
            value = r.get(keys.lease(p, PROCESSORS_GROUP))
            if value:
                worker = value.decode().rsplit(":", 1)[0]
                held[worker] = held.get(worker, 0) + 1
        return held

    try:
        wait_for(lambda: sorted(owners().values()) == [2, 2, 2, 2], timeout=60,
                 message="8 partitions spread 2-2-2-2 over 4 workers")
        for i in range(8):
            produce(r, keys, i, [f"line {i}"])
        wait_for(lambda: acked_all(r, keys, 8), timeout=60, message="all partitions processed")
        assert other.stop() == 0
        wait_for(lambda: sorted(owners().values()) == [2, 3, 3], timeout=60,
                 message="the leaver's partitions taken over by the 3 remaining workers")
    finally:
        assert group.stop() == 0
        if other.alive:
            other.stop()


def test_a_record_that_cannot_be_encoded_is_dead_lettered_alone(tmp_path: Path) -> None:
    from tailrace.lifecycle import ThreadRecord

    (tmp_path / "setter.py").write_text(
        "def f(r):\n    r['when'] = {1, 2} if r['log'] == 'x' else 1\n    return r\n")
    cfg = config(f"pipeline:\n  filters:\n    - {{name: python, call: 'setter:f', "
                 f"path: '{tmp_path}'}}\n", filename=str(tmp_path / "p.yaml"))
    handler = ProcessorHandler(cfg, ThreadRecord("consumer", "processor"))
    entry = (b"1-0", {b"v": b"1", b"b": encode_raw(batch(["a", "x", "b"]))})
    res = handler.handle(0, [entry], None)  # type: ignore[arg-type]
    [payload] = res.outputs
    assert [r["log"] for r in decode_records({b"v": b"2", b"b": payload})] == ["a", "b"]
    [dl] = res.dead_letters
    assert dl.plugin == "wire" and "cannot be encoded" in dl.error and dl.source == "1-0"
    assert msgpack.unpackb(dl.payload)[0]["log"] == "x"

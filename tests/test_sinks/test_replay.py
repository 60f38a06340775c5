"""Dead-letter replay: back where it is delivered once, as RQ jobs, resumable, never twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from esserver import EsServer
from rq import Queue, SimpleWorker
from sinkdata import (
    add_dead_letter,
    dead_letters,
    group_done,
    make_records,
    preload,
    running,
    sink_config,
)

from sinks.dlq import DeadLetterStore, Selection
from sinks.replay import enqueue, plan, replay_ids, run_progress
from tailrace.keys import Keys
from tailrace.wire import RawBatch, decode_records, encode_processed, encode_raw

PARTITIONS = 2


def store(r: redis.Redis, keys: Keys) -> DeadLetterStore:
    return DeadLetterStore(r, keys, PARTITIONS)


def out_entries(r: redis.Redis, keys: Keys, p: int) -> list[dict[bytes, bytes]]:
    return [f for _, f in r.xrange(keys.out(p))]


def out_records(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every record in the ``out`` streams (replays combine dead letters into batches)."""
    return [rec for p in range(PARTITIONS) for f in out_entries(r, keys, p)
            for rec in msgpack.unpackb(f[b"b"])]


def work(r: redis.Redis, keys: Keys) -> None:
    """Run the replay queue to the end with a real RQ worker, in this process."""
    SimpleWorker([Queue(keys.queue("replay"), connection=r)], connection=r).work(
        burst=True, logging_level="WARNING", with_scheduler=False)


def test_records_an_output_refused_go_back_to_that_output_only_once(
        r: redis.Redis, keys: Keys) -> None:
    recs = make_records(3)
    dl = add_dead_letter(r, keys, 1, records=recs, stage="sink:search")
    assert replay_ids(r, keys, 1, [dl]) == {"replayed": 1, "already": 0, "gone": 0}
    assert replay_ids(r, keys, 1, [dl]) == {"replayed": 0, "already": 1, "gone": 0}
    (entry,) = out_entries(r, keys, 1)
    assert entry[b"to"] == b"search"
    assert [x["_id"] for x in msgpack.unpackb(entry[b"b"])] == [x["_id"] for x in recs]
    mark = r.hget(keys.dlq_replayed(1), dl)
    assert mark is not None and mark.split()[:1] == [b"out"]


def test_records_a_processor_refused_go_to_every_output(r: redis.Redis, keys: Keys) -> None:
    dl = add_dead_letter(r, keys, 0, stage="processor", plugin="parser.0")
    replay_ids(r, keys, 0, [dl])
    (entry,) = out_entries(r, keys, 0)
    assert b"to" not in entry


def test_output_option_addresses_records_to_the_named_output(r: redis.Redis,
                                                             keys: Keys) -> None:
    dl = add_dead_letter(r, keys, 0, stage="sink:search")
    replay_ids(r, keys, 0, [dl], output="archive")
    assert out_entries(r, keys, 0)[0][b"to"] == b"archive"


def test_raw_batches_go_back_to_the_processors(r: redis.Redis, keys: Keys) -> None:
    raw = encode_raw(RawBatch("a", "tail.0", "web", "/l", "f", 0, 4, [b"abc"], [0]))
    dl = add_dead_letter(r, keys, 1, kind="raw", payload=raw, stage="processors")
    replay_ids(r, keys, 1, [dl])
    (entry,) = [f for _, f in r.xrange(keys.raw(1))]
    assert entry == {b"v": b"1", b"b": raw}
    assert not out_entries(r, keys, 1)


def test_a_dead_letter_of_a_version_2_entry_replays_its_records(r: redis.Redis,
                                                                keys: Keys) -> None:
    """A sink's poison dead letter keeps its entry's version (2): its records come back."""
    recs = make_records(2)
    dl = r.xadd(keys.dlq(0), {"v": "2", "kind": "records", "b": encode_processed(recs),
                              "stage": "sink:search", "plugin": "search", "error": "e",
                              "source": "1-0", "time": "1"}).decode()
    assert replay_ids(r, keys, 0, [dl])["replayed"] == 1
    (entry,) = out_entries(r, keys, 0)
    assert [x["_id"] for x in decode_records(entry)] == [x["_id"] for x in recs]


def test_an_undecodable_dead_letter_is_replayed_as_it_is_with_its_version(
        r: redis.Redis, keys: Keys) -> None:
    dl = r.xadd(keys.dlq(0), {"v": "2", "kind": "records", "b": b"not msgpack",
                              "stage": "sink:search", "plugin": "search", "error": "e",
                              "source": "1-0", "time": "1"}).decode()
    replay_ids(r, keys, 0, [dl])
    (entry,) = out_entries(r, keys, 0)
    assert (entry[b"v"], entry[b"b"], entry[b"to"]) == (b"2", b"not msgpack", b"search")


def test_a_purged_entry_is_reported_gone(r: redis.Redis, keys: Keys) -> None:
    dl = add_dead_letter(r, keys, 0)
    r.xdel(keys.dlq(0), dl)
    assert replay_ids(r, keys, 0, [dl])["gone"] == 1


def test_a_plan_leaves_out_what_was_replayed_and_cuts_chunks_per_partition(
        r: redis.Redis, keys: Keys) -> None:
    ids = [add_dead_letter(r, keys, i % 2) for i in range(7)]
    raw = add_dead_letter(r, keys, 0, kind="raw", payload=b"\x00", stage="processors")
    replay_ids(r, keys, 0, [ids[0]])
    p = plan(store(r, keys), Selection(), output=None, chunk=2)
    assert p.already == 1 and p.total == 7
    assert sorted((part, len(c)) for part, c in p.chunks) == [(0, 2), (0, 2), (1, 1), (1, 2)]
    assert raw in [i for _, c in p.chunks for i in c]
    addressed = plan(store(r, keys), Selection(), output="search")
    assert addressed.raw_skipped == 1 and addressed.total == 6


def test_a_plan_selects_by_partition_time_stage_and_plugin(r: redis.Redis, keys: Keys) -> None:
    add_dead_letter(r, keys, 0, stage="sink:a", plugin="a")
    add_dead_letter(r, keys, 1, stage="sink:b", plugin="b")
    s = store(r, keys)
    assert plan(s, Selection(partitions=(1,)), output=None).total == 1
    assert plan(s, Selection(stage="sink:a"), output=None).total == 1
    assert plan(s, Selection(plugin="b"), output=None).total == 1
    future = int(time.time() * 1000) + 60_000
    assert plan(s, Selection(since_ms=future), output=None).total == 0
    assert plan(s, Selection(until_ms=future), output=None).total == 2


def test_rq_jobs_replay_every_entry_once_and_a_rerun_replays_nothing(
        r: redis.Redis, keys: Keys) -> None:
    ids = [add_dead_letter(r, keys, i % 2, records=make_records(1, start=i)) for i in range(30)]
    s = store(r, keys)
    first = plan(s, Selection(), output=None, chunk=10)
    jobs = enqueue(r, keys, first, run="run1", output=None, backlog_limit=0)
    assert len(jobs) == 4
    work(r, keys)
    assert all(j.get_status(refresh=True) == "finished" for j in jobs)
    assert sorted(x["_id"] for x in out_records(r, keys)) == sorted(f"r{i:07d}" for i in range(30))
    progress = run_progress(r, keys, "run1")
    assert progress is not None
    assert (progress["replayed"], progress["done"], progress["jobs_done"]) == (30, 30, 4)
    again = plan(s, Selection(), output=None)
    assert again.total == 0 and again.already == 30
    assert r.hlen(keys.dlq_replayed(0)) + r.hlen(keys.dlq_replayed(1)) == len(ids)


def test_a_job_retried_after_dying_midway_replays_only_the_rest(r: redis.Redis,
                                                               keys: Keys) -> None:
    ids = [add_dead_letter(r, keys, 0, records=make_records(1, start=i)) for i in range(250)]
    jobs = enqueue(r, keys, plan(store(r, keys), Selection(), output=None), run="run2",
                   output=None, backlog_limit=0)
    replay_ids(r, keys, 0, ids[:130])  # what the first attempt did before its worker died
    work(r, keys)
    assert jobs[0].get_status(refresh=True) == "finished"
    assert jobs[0].return_value() == {"replayed": 120, "already": 130, "gone": 0}
    assert sorted(x["_id"] for x in out_records(r, keys)) == sorted(
        f"r{i:07d}" for i in range(250)), "each record once"


def test_replay_waits_while_the_output_backlog_is_over_the_limit(r: redis.Redis,
                                                                 keys: Keys) -> None:
    for _ in range(5):
        r.xadd(keys.out(0), {"v": "1", "b": b"\x90"})
    dl = add_dead_letter(r, keys, 0)
    t = threading.Thread(target=replay_ids, args=(r, keys, 0, [dl]),
                         kwargs={"backlog_limit": 5})
    t.start()
    t.join(timeout=0.8)
    assert t.is_alive() and not r.hexists(keys.dlq_replayed(0), dl), "it waits"
    r.xtrim(keys.out(0), maxlen=0)
    t.join(timeout=10)
    assert not t.is_alive() and r.hexists(keys.dlq_replayed(0), dl)


def test_records_refused_by_elasticsearch_are_delivered_after_the_fix_and_replay(
        tmp_path: Path, redis_url: str, r: redis.Redis, keys: Keys, es: EsServer) -> None:
    batches = [make_records(50, start=i) for i in range(0, 400, 50)]
    for b in batches:
        for rec in b:
            if int(rec["_id"][1:]) % 40 == 7:
                rec["code"] = "n/a"  # `code` is mapped long: refused
    preload(r, keys, PARTITIONS, ["search", "archive"], batches)  # archive: nothing trimmed
    cfg = sink_config(tmp_path, keys.prefix, [
        {"name": "es", "alias": "search", "hosts": [es.url], "index": "logs-%Y.%m.%d"},
        {"name": "file", "alias": "archive", "path": str(tmp_path / "archive.log")},
    ], partitions=PARTITIONS)
    with running(cfg, redis_url, "search"):
        wait_for_done(r, keys, "search")
        assert es.store.count() == 390
        assert len(dead_letters(r, keys, PARTITIONS)) == 10
        es.store.mappings["logs-2023.11.14"]["code"] = "keyword"  # the operator's fix
        enqueue(r, keys, plan(store(r, keys), Selection(), output=None), run="fix",
                output=None, backlog_limit=0)
        work(r, keys)
        wait_for_done(r, keys, "search")
    assert es.store.count() == 400 and set(es.store.created.values()) == {1}
    assert plan(store(r, keys), Selection(), output=None).total == 0
    replayed = [f for p in range(PARTITIONS) for _, f in r.xrange(keys.out(p)) if b"to" in f]
    assert replayed and all(f[b"to"] == b"search" for f in replayed), \
        "the archive output, which took them the first time, is not sent them again"


def wait_for_done(r: redis.Redis, keys: Keys, output: str) -> None:
    from helpers import wait_for

    wait_for(lambda: group_done(r, keys, output, PARTITIONS), timeout=60,
             message=f"{output} acknowledged everything")


def test_records_of_an_output_no_longer_configured_are_left_out_unless_redirected(
        r: redis.Redis, keys: Keys) -> None:
    add_dead_letter(r, keys, 0, stage="sink:old-es")
    add_dead_letter(r, keys, 0, stage="sink:search")
    s = store(r, keys)
    p = plan(s, Selection(), output=None, outputs=["search", "archive"])
    assert p.total == 1 and p.orphaned == {"old-es": 1}
    redirected = plan(s, Selection(), output="archive", outputs=["search", "archive"])
    assert redirected.total == 2 and not redirected.orphaned


def test_records_of_many_dead_letters_travel_together_per_output(r: redis.Redis,
                                                                 keys: Keys) -> None:
    ids = [add_dead_letter(r, keys, 0, stage=f"sink:{'a' if i % 3 else 'b'}",
                           records=make_records(2, start=2 * i)) for i in range(30)]
    raw = add_dead_letter(r, keys, 0, kind="raw", payload=b"\x01", stage="processors")
    assert replay_ids(r, keys, 0, [*ids, raw]) == {"replayed": 31, "already": 0, "gone": 0}
    entries = out_entries(r, keys, 0)
    assert sorted(e[b"to"] for e in entries) == [b"a", b"b"]
    assert sorted(len(msgpack.unpackb(e[b"b"])) for e in entries) == [20, 40]
    assert [f for _, f in r.xrange(keys.raw(0))] == [{b"v": b"1", b"b": b"\x01"}]


def test_a_dead_letter_replayed_by_another_job_meanwhile_is_left_out_of_the_batch(
        r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    import sinks.replay as replay

    ids = [add_dead_letter(r, keys, 0, records=make_records(1, start=i)) for i in range(5)]
    groups = replay._groups

    def racing(entries: Any, output: str) -> Any:
        monkeypatch.setattr(replay, "_groups", groups)
        replay_ids(r, keys, 0, [ids[2]])  # another worker, between our read and our append
        return groups(entries, output)

    monkeypatch.setattr(replay, "_groups", racing)
    assert replay_ids(r, keys, 0, ids) == {"replayed": 4, "already": 1, "gone": 0}
    assert sorted(x["_id"] for x in out_records(r, keys)) == [f"r{i:07d}" for i in range(5)]

"""The sink worker end to end: real Redis streams in, the Bulk API test server out.

Records are preloaded into ``out`` as processors would commit them; the sink's group
delivers them. Every document must be created exactly once (by ``_id``), refused ones
must be in the dead-letter stream with their reason, and only failed items retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from esserver import EsServer, Fault
from helpers import Role, read_json_lines, wait_for
from sinkdata import dead_letters, group_done, make_records, preload, running, sink_config

from tailrace.keys import Keys, sink_group
from tailrace.wire import decode_records, encode_records

PARTITIONS = 4


def es_output(url: str, **options: Any) -> dict[str, Any]:
    return {"name": "es", "alias": "search", "hosts": [url], "index": "logs-%Y.%m.%d",
            "batch_docs": 300, "retry_backoff_ms": 10, "retry_backoff_max_ms": 50, **options}


def load(r: redis.Redis, keys: Keys, total: int, per_entry: int, outputs: list[str],
         bad: set[int] | frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    batches = []
    for start in range(0, total, per_entry):
        batch = make_records(per_entry, start=start)
        for rec in batch:
            if int(rec["_id"][1:]) in bad:
                rec["code"] = "oops"  # `code` is mapped long: a mapping error
        batches.append(batch)
    preload(r, keys, PARTITIONS, outputs, batches)
    return [rec for b in batches for rec in b]


def test_every_document_once_only_failed_items_retried_bad_ones_dead_lettered(
        tmp_path: Path, redis_url: str, prefix: str, r: redis.Redis, es: EsServer) -> None:
    keys = Keys(prefix)
    bad = {i for i in range(1, 2000) if i % 97 == 0}
    retried = {f"r{i:07d}" for i in range(5, 2000, 101)}
    es.add_fault(Fault(item_status=429, ids=sorted(retried), times=2))
    records = load(r, keys, 2000, 100, ["search"], bad)
    entry_of = {rec["_id"]: (p, eid) for p in range(PARTITIONS)
                for eid, f in r.xrange(keys.out(p)) for rec in decode_records(f)}
    cfg = sink_config(tmp_path, prefix, [es_output(es.url)], partitions=PARTITIONS)
    with running(cfg, redis_url, "search") as lifecycle:
        wait_for(lambda: group_done(r, keys, "search", PARTITIONS), timeout=60,
                 message="every entry acknowledged")
    bad_ids = {f"r{i:07d}" for i in bad}
    counters = lifecycle.counters()
    assert counters["es_rejected"] == len(bad) and counters["es_retried"] == 2 * len(retried)
    assert counters["dead_letters"] == len(bad)
    assert es.store.count() == 2000 - len(bad)
    assert set(es.store.created.values()) == {1}
    assert es.store.ids().keys() == {r["_id"] for r in records} - bad_ids
    attempts = es.store.attempts
    assert {i for i, n in attempts.items() if n == 3} == retried
    assert {i for i, n in attempts.items() if n != 3} == {r["_id"] for r in records} - retried
    assert all(attempts[i] == 1 for i in attempts if i not in retried), "only failed items retried"
    dls = dead_letters(r, keys, PARTITIONS)
    assert {d["records"][0]["_id"] for d in dls} == bad_ids and len(dls) == len(bad_ids)
    for d in dls:
        assert d["kind"] == b"records" and d["stage"] == b"sink:search"
        assert d["plugin"] == b"search"
        assert b"document_parsing_exception" in d["error"] and b"[code]" in d["error"]
        assert entry_of[d["records"][0]["_id"]] == (d["partition"], d["source"]), \
            "the dead letter names the entry its record came from"


def test_a_long_outage_holds_the_entries_pending_then_delivers_them_once(
        tmp_path: Path, redis_url: str, prefix: str, r: redis.Redis, es: EsServer) -> None:
    keys = Keys(prefix)
    load(r, keys, 1200, 100, ["search"])
    es.add_fault(Fault(status=503))
    cfg = sink_config(tmp_path, prefix, [es_output(es.url)], partitions=PARTITIONS)
    with running(cfg, redis_url, "search") as lifecycle:
        wait_for(lambda: es.requests >= 6, timeout=30, message="six refused bulk requests")
        pending = sum(r.xpending(keys.out(p), sink_group("search"))["pending"]
                      for p in range(PARTITIONS))
        assert pending > 0, "entries stay pending while Elasticsearch is down"
        assert es.store.count() == 0 and not dead_letters(r, keys, PARTITIONS)
        assert lifecycle.threads["sink:search"].state == "throttled"
        es.clear_faults()
        wait_for(lambda: group_done(r, keys, "search", PARTITIONS), timeout=60,
                 message="delivery after the outage")
        # Once delivering again, the sink no longer says throttled (status, /health).
        wait_for(lambda: lifecycle.threads["sink:search"].state != "throttled", timeout=10,
                 message="the sink's state after the outage")
        assert lifecycle.state in ("active", "idle")
    assert es.store.count() == 1200 and set(es.store.created.values()) == {1}
    assert not dead_letters(r, keys, PARTITIONS)


def test_an_entry_addressed_to_one_output_is_delivered_by_it_alone(
        tmp_path: Path, redis_url: str, prefix: str, r: redis.Redis, es: EsServer) -> None:
    keys = Keys(prefix)
    load(r, keys, 8, 2, ["search", "archive"])
    replay = make_records(3, start=100, tag="other.tag")
    r.xadd(keys.out(1), {"v": "1", "b": encode_records(replay), "to": "search"})
    out_file = tmp_path / "archive.log"
    cfg = sink_config(tmp_path, prefix, [
        es_output(es.url, match="web.*"),
        {"name": "file", "alias": "archive", "match": "*", "path": str(out_file)},
    ], partitions=PARTITIONS)
    with running(cfg, redis_url, "search"), running(cfg, redis_url, "archive"):
        wait_for(lambda: group_done(r, keys, "search", PARTITIONS)
                 and group_done(r, keys, "archive", PARTITIONS), timeout=60,
                 message="both outputs done")
    assert es.store.count() == 11, "the addressed entry bypasses match: it was asked for"
    assert len(read_json_lines(out_file)) == 8, "the other output skipped it"


@pytest.mark.slow
def test_sink_sigkilled_mid_bulk_indexes_every_document_exactly_once(
        tmp_path: Path, redis_url: str, prefix: str, r: redis.Redis, es: EsServer) -> None:
    keys = Keys(prefix)
    total = 12_000
    bad = {i for i in range(1, total) if i % 499 == 0}
    retried = {f"r{i:07d}" for i in range(3, total, 997)}
    es.add_fault(Fault(item_status=429, ids=sorted(retried), times=1))
    es.add_fault(Fault(delay_s=0.2))  # answers come late: kills land mid-bulk
    records = load(r, keys, total, 200, ["search"], bad)
    cfg = sink_config(tmp_path, prefix, [es_output(es.url, batch_docs=500, workers=2)],
                      partitions=PARTITIONS, lease_ttl_ms=1500, heartbeat_ms=200)
    sink = Role("sink", cfg, redis_url, "--output", "search").start()
    kills = 0
    try:
        for threshold in (2_000, 6_000):
            wait_for(lambda t=threshold: es.store.count() >= t and es.concurrent > 0,
                     timeout=90, interval=0.005, message=f"a bulk in flight past {threshold}")
            sink.kill()
            sink.log_file.close()
            kills += 1
            sink = Role("sink", cfg, redis_url, "--output", "search").start()
        wait_for(lambda: group_done(r, keys, "search", PARTITIONS), timeout=180,
                 interval=0.2, message="every entry acknowledged after the kills")
    finally:
        code = sink.stop()
    assert code == 0, sink.output()[-3000:]
    bad_ids = {f"r{i:07d}" for i in bad}
    good = {rec["_id"] for rec in records} - bad_ids
    assert es.store.ids().keys() == good and set(es.store.ids().values()) == {1}
    assert set(es.store.created.values()) == {1}, "no document created twice"
    assert es.store.statuses[409] > 0, "a kill landed after indexing, before the ack"
    dls = dead_letters(r, keys, PARTITIONS)
    assert sorted(d["records"][0]["_id"] for d in dls) == sorted(bad_ids)
    attempts = es.store.attempts
    assert all(attempts[i] >= 2 for i in retried)
    again = {i for i, n in attempts.items() if n > 1} - retried
    assert len(again) <= kills * 8 * 200, "only the batch in flight at a kill was resent"

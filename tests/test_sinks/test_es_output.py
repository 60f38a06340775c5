"""The es output: one bulk request per chunk, each item judged on its own, exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from esserver import EsServer, Fault
from sinkdata import make_records

from sinks.context import OutputContext
from sinks.es import ElasticsearchOutput, MemoryTransport
from sinks.es.config import ElasticsearchOutputOptions
from tailrace.outcome import Delivered, Retry


def output(tmp_path: Path, url: str | None = None, transport: Any = None,
           **options: Any) -> ElasticsearchOutput:
    opts = ElasticsearchOutputOptions(name="es", hosts=[url or "http://127.0.0.1:1"],
                                      index="logs-%Y.%m.%d", **options)
    return ElasticsearchOutput(opts, OutputContext("es.0", tmp_path, Path), transport)


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["_id"] for r in records]


def test_partial_failure_retries_only_the_failed_items(tmp_path: Path, es: EsServer) -> None:
    out = output(tmp_path, es.url, batch_docs=40)
    recs = make_records(100)
    es.add_fault(Fault(item_status=429, ids=["r0000007", "r0000063"], times=1))
    es.add_fault(Fault(item_status=503, error_type="unavailable_shards_exception",
                       ids=["r0000090"], times=1))
    first = out.write_batch(recs)
    assert isinstance(first, Retry)
    assert ids(first.records) == ["r0000007", "r0000063", "r0000090"]
    assert not first.rejected
    second = out.write_batch(first.records)
    assert isinstance(second, Delivered) and not second.rejected
    attempts = es.store.attempts
    assert {i for i, n in attempts.items() if n == 2} == {"r0000007", "r0000063", "r0000090"}
    assert all(n in (1, 2) for n in attempts.values()) and len(attempts) == 100
    assert es.store.count() == 100 and set(es.store.created.values()) == {1}
    out.close()


def test_a_redelivered_batch_meets_409s_and_counts_as_delivered(tmp_path: Path,
                                                                es: EsServer) -> None:
    out = output(tmp_path, es.url)
    recs = make_records(50)
    assert isinstance(out.write_batch(recs), Delivered)
    again = out.write_batch(recs)
    assert isinstance(again, Delivered) and not again.rejected
    assert out.stats["conflicts"] == 50
    assert es.store.count() == 50 and set(es.store.created.values()) == {1}
    out.close()


def test_mapping_errors_are_rejected_with_error_type_and_reason(tmp_path: Path,
                                                               es: EsServer) -> None:
    out = output(tmp_path, es.url)
    recs = make_records(10)
    recs[3]["code"] = "not-a-number"  # `code` is mapped long by the first document
    recs[6]["kubernetes"] = "flat"
    recs[5]["kubernetes"] = {"pod": "p"}
    result = out.write_batch(recs)
    assert isinstance(result, Delivered)
    by_id = {r.record["_id"]: r.reason for r in result.rejected}
    assert set(by_id) == {"r0000003", "r0000006"}
    assert by_id["r0000003"].startswith("es: 400 document_parsing_exception: ")
    assert "failed to parse field [code] of type [long]" in by_id["r0000003"]
    assert "object mapping for [kubernetes]" in by_id["r0000006"]
    assert es.store.count() == 8
    out.close()


def test_an_invalid_index_name_from_a_record_field_is_dead_lettered(tmp_path: Path,
                                                                   es: EsServer) -> None:
    opts = ElasticsearchOutputOptions(name="es", hosts=[es.url], index="app-${record.svc}")
    out = ElasticsearchOutput(opts, OutputContext("es.0", tmp_path, Path))
    recs = make_records(2)
    recs[0]["svc"], recs[1]["svc"] = "cart", "Cart"
    result = out.write_batch(recs)
    assert isinstance(result, Delivered)
    (rej,) = result.rejected
    assert "invalid_index_name_exception" in rej.reason and "must be lowercase" in rej.reason
    out.close()


def test_a_throttled_request_retries_every_document_of_it(tmp_path: Path, es: EsServer) -> None:
    out = output(tmp_path, es.url, batch_docs=10)
    es.add_fault(Fault(status=429, times=1))
    result = out.write_batch(make_records(30))
    assert isinstance(result, Retry)
    assert len(result.records) == 10 and "429" in result.reason
    assert isinstance(out.write_batch(result.records), Delivered)
    assert es.store.count() == 30
    out.close()


def test_a_413_splits_the_request_and_a_lone_oversized_document_is_rejected(
        tmp_path: Path) -> None:
    with EsServer(max_content_length=6_000) as srv:
        out = output(tmp_path, srv.url, batch_bytes=1_000_000)
        recs = make_records(60)
        recs[10]["log"] = "x" * 8_000
        result = out.write_batch(recs)
        assert isinstance(result, Delivered)
        assert [r.record["_id"] for r in result.rejected] == ["r0000010"]
        assert "too large" in result.rejected[0].reason
        assert srv.store.count() == 59
        out.close()


def test_workers_send_a_large_batch_as_parallel_requests(tmp_path: Path, es: EsServer) -> None:
    es.add_fault(Fault(delay_s=0.3))
    out = output(tmp_path, es.url, batch_docs=100, workers=4)
    assert isinstance(out.write_batch(make_records(800)), Delivered)
    assert es.requests == 8
    assert es.max_concurrent == 4
    out.close()


def test_one_worker_sends_one_request_at_a_time(tmp_path: Path, es: EsServer) -> None:
    out = output(tmp_path, es.url, batch_docs=100, workers=1)
    assert isinstance(out.write_batch(make_records(300)), Delivered)
    assert es.max_concurrent == 1 and es.requests == 3
    out.close()


def test_an_outage_returns_everything_for_retry_and_drops_nothing(tmp_path: Path) -> None:
    mem = MemoryTransport()
    mem.fail_next(503, None, 502, 503)  # None: the connection drops
    out = output(tmp_path, transport=mem, batch_docs=25, workers=1)
    recs = make_records(50)
    pending, rounds = recs, 0
    while True:
        rounds += 1
        result = out.write_batch(pending)
        if isinstance(result, Delivered):
            break
        assert isinstance(result, Retry) and not result.rejected
        assert len(result.records) == 50, "nothing was delivered during the outage"
        pending = result.records
    assert rounds == 3 and not result.rejected
    assert sorted(d for _, d in mem.docs) == ids(recs)
    assert set(mem.created.values()) == {1}


def test_the_memory_transport_answers_like_the_bulk_api(tmp_path: Path) -> None:
    mem = MemoryTransport()
    mem.fail_item("r0000001", 429, times=2)
    mem.fail_item("r0000002", 400, reason="failed to parse field [code]")
    out = output(tmp_path, transport=mem)
    recs = make_records(3)
    r1 = out.write_batch(recs)
    assert isinstance(r1, Retry) and ids(r1.records) == ["r0000001"]
    assert "failed to parse" in r1.rejected[0].reason
    r2 = out.write_batch(r1.records)
    assert isinstance(r2, Retry)
    assert isinstance(out.write_batch(r1.records), Delivered)
    assert mem.attempts == {"r0000000": 1, "r0000001": 3, "r0000002": 1}


def test_the_retry_policy_comes_from_the_options(tmp_path: Path) -> None:
    out = output(tmp_path, transport=MemoryTransport(), retry_backoff_ms=100,
                 retry_backoff_max_ms=400)
    b = out.backoff()
    delays = [b.next_delay() for _ in range(6)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 0.4 for d in delays) and max(delays) >= 0.2


@pytest.mark.parametrize("opensearch, major", [(False, 7), (False, 9), (True, 2)])
def test_the_same_requests_work_with_elasticsearch_7_9_and_opensearch(
        tmp_path: Path, opensearch: bool, major: int) -> None:
    with EsServer(version=f"{major}.0.0", opensearch=opensearch) as srv:
        out = output(tmp_path, srv.url)
        recs = make_records(20)
        recs[4]["code"] = "x"
        result = out.write_batch(recs)
        assert isinstance(result, Delivered) and len(result.rejected) == 1
        kind = "document_parsing_exception" if major >= 8 and not opensearch else (
            "mapper_parsing_exception")
        assert kind in result.rejected[0].reason
        assert isinstance(out.write_batch(recs[:4]), Delivered)
        assert srv.store.count() == 19
        out.close()

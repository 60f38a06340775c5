"""The es output against real Elasticsearch and OpenSearch servers (Maven Central's zips).

One server per product per session (``tests/esreal.py``: fetched and unpacked once into a
cache, started on a free port; the fixture is module-scoped, all the tier being here, so each
stops once its tests are done); every test works in indices named after itself. The write
thread pool has a tiny queue (``thread_pool.write.queue_size: 4``), so several bulk requests
in flight provoke real 429s: every test copes with them as the sink must (retries until
delivered). ``TAILRACE_ES_REAL=0`` skips the tier; so does a missing Java, Maven or
artifact, saying which.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from esreal import SERVERS, UNSERVED, RealServer, Unavailable
from helpers import Role, wait_for, write_config
from sinkdata import dead_letters, group_done, make_records, preload, running, sink_config

from sinks.context import OutputContext
from sinks.es import ElasticsearchOutput, ElasticsearchOutputOptions
from tailrace.generate import Generator
from tailrace.keys import Keys, sink_group
from tailrace.outcome import Delivered, Rejection, Retry
from tailrace.plugins import Record

pytestmark = [pytest.mark.es_real, pytest.mark.slow, pytest.mark.timeout(600)]

PARTITIONS = 4
ALL = {**SERVERS, **UNSERVED}
KEYS = ["es8", "es9", "os2", "os3"]


@pytest.fixture(scope="module", params=KEYS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RealServer]:
    """One real server per product for this module's tests (pytest groups them by it), so
    one start per product per session, and the last one stops when the module is done."""
    if os.environ.get("TAILRACE_ES_REAL") == "0":
        pytest.skip("TAILRACE_ES_REAL=0: the real Elasticsearch/OpenSearch tier is off")
    spec = ALL[request.param]
    try:
        srv = RealServer(spec, tmp_path_factory.mktemp(spec.key),
                         settings={"thread_pool.write.queue_size": "4"})
    except Unavailable as exc:
        pytest.skip(str(exc))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def name(server: RealServer) -> Iterator[str]:
    """An index name prefix of this test; its indices are deleted afterwards."""
    base = f"t-{uuid.uuid4().hex[:8]}"
    yield base
    if server.proc is not None:
        server.http.request("DELETE", f"{server.url}/{base}*")


def options(server: RealServer, **extra: Any) -> ElasticsearchOutputOptions:
    return ElasticsearchOutputOptions(name="es", hosts=[server.url], **{
        "retry_backoff_ms": 20, "retry_backoff_max_ms": 500, **extra})


def output(server: RealServer, tmp_path: Path, **extra: Any) -> ElasticsearchOutput:
    return ElasticsearchOutput(options(server, **extra), OutputContext("es.real", tmp_path, Path))


def deliver(out: ElasticsearchOutput, records: list[Record], rounds: int = 200
            ) -> list[Rejection]:
    """Write ``records`` as the sink worker does: retry what comes back, after the backoff."""
    rejected: list[Rejection] = []
    backoff = out.backoff()
    pending = records
    for _ in range(rounds):
        result = out.write_batch(pending)
        rejected.extend(result.rejected)
        if isinstance(result, Delivered):
            return rejected
        assert isinstance(result, Retry)
        pending = result.records
        time.sleep(backoff.next_delay())
    raise AssertionError(f"{len(pending)} records still not delivered after {rounds} rounds")


def template(server: RealServer, name: str, patterns: list[str], **body: Any) -> None:
    server.call("PUT", f"/_index_template/{name}",
                {"index_patterns": patterns, "priority": 500, **body})


def test_the_output_says_which_server_it_found_and_writes_to_it_unconfigured(
        tmp_path: Path, server: RealServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = output(server, tmp_path, index=f"{name}-%Y.%m.%d")
    # What makes it work everywhere unconfigured: plain NDJSON (OpenSearch answers 406 to
    # Elasticsearch's compatibility media types) and no _type in the actions.
    assert out.transport.headers["Content-Type"] == "application/x-ndjson"  # type: ignore[attr-defined]
    assert b"_type" not in out.formatter.build(make_records(3)).chunks[0].body
    with caplog.at_level(logging.INFO, logger="sinks.es.transport"):
        assert not deliver(out, make_records(100))
    found = [r.getMessage() for r in caplog.records if "es_server_found" in r.getMessage()]
    assert found == [f"es_server_found: {server.url}: {server.spec.label}"]
    assert out.transport.servers == {server.url: server.spec.label}  # type: ignore[attr-defined]
    assert server.count(f"{name}-*") == 100
    out.close()


def test_100k_lines_through_the_pipeline_are_indexed_exactly_once(
        tmp_path: Path, server: RealServer, name: str, redis_url: str, prefix: str) -> None:
    gen = Generator(tmp_path / "logs", files=4, fmt="plain", rate=0, total=100_000)
    gen.run()
    gen.close()
    cfg = write_config(tmp_path / "pipeline.yaml", {
        "service": {"data_dir": str(tmp_path / "data"), "partitions": PARTITIONS,
                    "prefix": prefix, "lease_ttl_ms": 3000, "heartbeat_ms": 300,
                    "publish_interval_s": 1},
        "pipeline": {
            "inputs": [{"name": "tail", "tag": "web.*", "path": str(tmp_path / "logs" / "*.log"),
                        "format": "plain", "read_from_head": True, "refresh_interval_s": 0.2}],
            "filters": [{"name": "parser", "match": "web.*", "key": "log", "parser": "nginx",
                         "reserve_data": True}],
            "outputs": [{"name": "es", "alias": "search", "match": "*", "hosts": [server.url],
                         "index": f"{name}-%Y.%m.%d", "retry_backoff_ms": 50}],
        },
    })
    run = Role("run", cfg, redis_url).start()
    try:
        wait_for(lambda: server.count(f"{name}-*") >= 100_000, timeout=400, interval=1.0,
                 message="100,000 documents indexed")
        client = redis.Redis.from_url(redis_url)
        wait_for(lambda: group_done(client, Keys(prefix), "search", PARTITIONS), timeout=60,
                 message="every out entry acknowledged")
        client.close()
    finally:
        code = run.stop()
    assert code == 0, run.output()[-3000:]
    assert server.count(f"{name}-*") == 100_000
    assert f"es_server_found: {server.url}: {server.spec.label}" in run.output()


def test_sink_sigkilled_mid_bulk_then_restarted_leaves_the_count_exact(
        tmp_path: Path, server: RealServer, name: str, redis_url: str, prefix: str,
        r: redis.Redis) -> None:
    keys = Keys(prefix)
    total = 20_000
    preload(r, keys, PARTITIONS, ["search"],
            (make_records(500, start=s) for s in range(0, total, 500)))
    cfg = sink_config(tmp_path, prefix, [{
        "name": "es", "alias": "search", "hosts": [server.url], "index": f"{name}-kill",
        "batch_docs": 500, "workers": 2, "retry_backoff_ms": 20}],
        partitions=PARTITIONS, lease_ttl_ms=1500, heartbeat_ms=200)
    index = f"{name}-kill"

    def refused() -> int:  # create ops the server answered 409 (already there)
        stats = server.call("GET", f"/{index}/_stats/indexing")
        return int(stats["_all"]["primaries"]["indexing"]["index_failed"])

    sink = Role("sink", cfg, redis_url, "--output", "search").start()
    try:
        # A kill lands between a bulk and its commit only some of the time (a fast sink
        # commits soon after its bulk): kill again, further on, until one did, so the
        # redelivery of indexed documents is what gets tested.
        for kill_at in (3_000, 7_000, 11_000):
            wait_for(lambda n=kill_at: server.count(index) >= n, timeout=120, interval=0.05,
                     message=f"{kill_at:,} documents indexed before the kill")
            sink.kill()  # SIGKILL mid-stream: bulks in flight, indexed ones unacknowledged
            sink.log_file.close()
            after = min(total, server.count(index) + 1_500)
            sink = Role("sink", cfg, redis_url, "--output", "search").start()
            # The restarted sink redelivers what was pending before anything new: once new
            # documents arrive without a 409, the kill came between a commit and a bulk.
            wait_for(lambda n=after: refused() > 0 or server.count(index) >= n, timeout=120,
                     interval=0.1, message="the restarted sink indexing again")
            if refused() or server.count(index) >= total:
                break
        wait_for(lambda: group_done(r, keys, "search", PARTITIONS), timeout=240, interval=0.2,
                 message="every entry acknowledged after the restarts")
    finally:
        code = sink.stop()
    assert code == 0, sink.output()[-3000:]
    assert server.count(index) == total
    assert refused() > 0, ("no kill in three landed between a bulk and its commit: the "
                           "redelivered documents' 409s were not tested")
    assert not dead_letters(r, keys, PARTITIONS), "409s count as delivered"


def test_mapping_conflicts_are_dead_lettered_with_the_servers_reason_and_the_rest_delivered(
        tmp_path: Path, server: RealServer, name: str, redis_url: str, prefix: str,
        r: redis.Redis) -> None:
    keys = Keys(prefix)
    # `detail` an object, `seen` a date: as the first documents with them would map them.
    server.call("PUT", f"/{name}-map", {"mappings": {"properties": {
        "detail": {"properties": {"a": {"type": "long"}}}, "seen": {"type": "date"}}}})
    records = make_records(2_000)
    for rec in records:
        rec["detail"], rec["seen"] = {"a": 1}, "2024-01-02T03:04:05Z"
    object_vs_text = {f"r{i:07d}" for i in range(10, 2_000, 97)}
    bad_date = {f"r{i:07d}" for i in range(20, 2_000, 89)} - object_vs_text
    for rec in records:
        if rec["_id"] in object_vs_text:
            rec["detail"] = "just text"
        if rec["_id"] in bad_date:
            rec["seen"] = "2024-13-45T99:00:00Z"
    preload(r, keys, PARTITIONS, ["search"], (records[i:i + 250] for i in range(0, 2_000, 250)))
    cfg = sink_config(tmp_path, prefix, [{
        "name": "es", "alias": "search", "hosts": [server.url], "index": f"{name}-map",
        "batch_docs": 500, "retry_backoff_ms": 20}], partitions=PARTITIONS)
    with running(cfg, redis_url, "search") as lifecycle:
        wait_for(lambda: group_done(r, keys, "search", PARTITIONS), timeout=120,
                 message="every entry acknowledged")
    dls = dead_letters(r, keys, PARTITIONS)
    by_id = {d["records"][0]["_id"]: d["error"].decode() for d in dls}
    assert by_id.keys() == object_vs_text | bad_date
    kind = "mapper_parsing_exception" if server.opensearch else "document_parsing_exception"
    for doc_id in object_vs_text:
        assert by_id[doc_id].startswith(f"es: 400 {kind}: "), by_id[doc_id]
        assert "object mapping for [detail]" in by_id[doc_id]
    for doc_id in bad_date:
        assert f"failed to parse field [seen] of type [date] in document with id '{doc_id}'" \
            in by_id[doc_id]
    assert lifecycle.counters()["dead_letters"] == len(by_id)
    assert server.count(f"{name}-map") == 2_000 - len(by_id)


def test_real_429s_are_retried_for_just_those_items_until_every_document_is_in(
        tmp_path: Path, server: RealServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Eight shards and eight requests in flight against 2 write threads and a queue of 4.
    template(server, f"{name}-t", [f"{name}-busy*"],
             template={"settings": {"number_of_shards": 8, "number_of_replicas": 0}})
    out = output(server, tmp_path, index=f"{name}-busy", workers=8, batch_docs=250)
    retried_first: list[Record] = []
    total = 0
    for round_ in range(10):  # until the server has refused some items (so far: at once)
        records = make_records(8_000, start=round_ * 8_000)
        total += len(records)
        result = out.write_batch(records)
        if isinstance(result, Retry):
            retried_first = result.records
            assert not result.rejected
            break
    assert retried_first, "8 requests of 250 on 8 shards did not fill a queue of 4"
    assert len(retried_first) < total, "only the refused items come back"
    assert server.count(f"{name}-busy") == total - len(retried_first), \
        "the items retried are exactly those the server did not index"
    with caplog.at_level(logging.WARNING, logger="sinks.es.output"):
        assert not deliver(out, retried_first)
    assert server.count(f"{name}-busy") == total
    assert out.stats["retried"] >= len(retried_first)
    assert out.stats["conflicts"] == 0, "nothing was sent again that had been indexed"
    out.close()


def test_index_names_from_record_time_templates_and_data_streams_are_created_for_real(
        tmp_path: Path, server: RealServer, name: str) -> None:
    day = 86_400.0
    records = [rec for d in range(3) for rec in make_records(
        100, start=d * 100, base_time=1_700_000_000.0 + d * day)]
    template(server, f"{name}-tpl", [f"{name}-daily-*"], template={
        "settings": {"number_of_shards": 2, "number_of_replicas": 0},
        "mappings": {"properties": {"code": {"type": "keyword"}}}})
    out = output(server, tmp_path, index=f"{name}-daily-%Y.%m.%d")
    assert not deliver(out, records)
    listed = server.call("GET", f"/_cat/indices/{name}-daily-*?format=json&h=index")
    assert sorted(i["index"] for i in listed) == [
        f"{name}-daily-2023.11.14", f"{name}-daily-2023.11.15", f"{name}-daily-2023.11.16"]
    for index in (i["index"] for i in listed):
        assert server.count(index) == 100
        mapping = server.call("GET", f"/{index}/_mapping")[index]["mappings"]["properties"]
        assert mapping["code"]["type"] == "keyword", "the index template's mapping applied"
        settings = server.call("GET", f"/{index}/_settings")[index]["settings"]["index"]
        assert settings["number_of_shards"] == "2"
    out.close()

    stream = f"{name}-ds-default"
    template(server, f"{name}-ds", [f"{name}-ds-*"], data_stream={})
    out = output(server, tmp_path, data_stream=stream)
    assert not deliver(out, records)
    assert not deliver(out, records), "a redelivery to the data stream"
    assert out.stats["conflicts"] == len(records)
    assert server.count(stream) == 300
    backing = server.call("GET", f"/_cat/indices/.ds-{stream}-*?format=json&h=index")
    assert len(backing) == 1 and backing[0]["index"].startswith(f".ds-{stream}-")
    assert backing[0]["index"].endswith("-000001")
    out.close()
    server.http.request("DELETE", f"{server.url}/_data_stream/{stream}")


def test_server_down_mid_stream_throttles_the_sink_then_every_line_lands_once(
        tmp_path: Path, server: RealServer, name: str, redis_url: str, prefix: str,
        r: redis.Redis) -> None:
    keys = Keys(prefix)
    total = 30_000
    preload(r, keys, PARTITIONS, ["search"],
            (make_records(200, start=s) for s in range(0, total, 200)))
    cfg = sink_config(tmp_path, prefix, [{
        "name": "es", "alias": "search", "hosts": [server.url], "index": f"{name}-down",
        "batch_docs": 200, "retry_backoff_ms": 50, "retry_backoff_max_ms": 2_000,
        "host_cooldown_s": 1}], partitions=PARTITIONS)
    with running(cfg, redis_url, "search") as lifecycle:
        wait_for(lambda: server.count(f"{name}-down") >= 1_000, timeout=120, interval=0.05,
                 message="1,000 documents indexed")
        # SIGKILL: it stops at once, mid-bulk (a graceful stop could let a fast server
        # finish the stream first), and must recover what it acknowledged from its translog.
        server.kill()
        down_at = time.monotonic()
        wait_for(lambda: lifecycle.threads["sink:search"].state == "throttled", timeout=30,
                 message="the sink throttled while the server is down")
        pending = sum(r.xpending(keys.out(p), sink_group("search"))["pending"]
                      for p in range(PARTITIONS))
        assert pending > 0, "entries stay pending while the server is down (backpressure)"
        # Down for ~30 s in all: 10 s stopped, then the time it takes to start again.
        time.sleep(max(0.0, 10.0 - (time.monotonic() - down_at)))
        assert lifecycle.threads["sink:search"].state == "throttled"
        assert not group_done(r, keys, "search", PARTITIONS)
        server.start()
        print(f"{server.spec.label} was down {time.monotonic() - down_at:.0f}s")
        wait_for(lambda: group_done(r, keys, "search", PARTITIONS), timeout=180, interval=0.2,
                 message="every entry acknowledged once the server is back")
    assert server.count(f"{name}-down") == total
    assert not dead_letters(r, keys, PARTITIONS)

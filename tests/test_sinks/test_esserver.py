"""The Bulk API test server is as strict as Elasticsearch, so passing against it means something."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3
from esserver import EsServer, Fault, apply_filter_path

NDJSON = {"Content-Type": "application/x-ndjson"}
PAIR = b'{"create":{"_index":"logs","_id":"1"}}\n{"log":"x","n":1}\n'


def post(url: str, body: bytes, headers: dict[str, str] | None = None,
         path: str = "/_bulk") -> tuple[int, Any]:
    r = urllib3.PoolManager().request("POST", url + path, body=body,
                                      headers=NDJSON if headers is None else headers,
                                      retries=False)
    return r.status, orjson.loads(r.data) if r.data else None


def reason(doc: Any) -> str:
    return str(doc["error"]["reason"] if isinstance(doc["error"], dict) else doc["error"])


def test_the_body_must_end_with_a_newline(es: EsServer) -> None:
    status, doc = post(es.url, PAIR[:-1])
    assert status == 400 and "terminated by a newline" in reason(doc)


@pytest.mark.parametrize("headers, status", [({}, 406), ({"Content-Type": "text/plain"}, 406),
                                             ({"Content-Type": "application/json"}, 200)])
def test_the_content_type_must_be_ndjson_or_json(es: EsServer, headers: dict[str, str],
                                                 status: int) -> None:
    assert post(es.url, PAIR, headers)[0] == status


def test_an_action_needs_its_source_line(es: EsServer) -> None:
    status, doc = post(es.url, b'{"create":{"_index":"logs","_id":"1"}}\n')
    assert status == 400 and "no source" in reason(doc)


@pytest.mark.parametrize("action, text", [
    (b'{"upsert":{"_index":"a"}}', "expected field [create]"),
    (b'{"create":{"_index":"a","_type":"_doc"}}', "unknown parameter [_type]"),
    (b'"create"', "Malformed action/metadata line [1]"),
    (b'{"create":{"_id":"1"}}', "index is missing"),
])
def test_malformed_action_lines_fail_the_request(es: EsServer, action: bytes, text: str) -> None:
    status, doc = post(es.url, action + b'\n{"a":1}\n')
    assert status == 400 and text in reason(doc)


def test_unknown_query_parameters_are_refused(es: EsServer) -> None:
    status, doc = post(es.url, PAIR, path="/_bulk?flush=true")
    assert status == 400 and "unrecognized parameter: [flush]" in reason(doc)


def test_create_conflicts_mapping_errors_and_data_streams_answer_per_item(es: EsServer) -> None:
    body = (PAIR + PAIR + b'{"create":{"_index":"logs","_id":"2"}}\n{"n":"abc"}\n'
            b'{"index":{"_index":"logs-app-default","_id":"3"}}\n{"@timestamp":"2024-01-01"}\n'
            b'{"create":{"_index":"logs-app-default","_id":"4"}}\n{"log":"no time"}\n'
            b'{"create":{"_index":"Logs","_id":"5"}}\n{"log":"x"}\n')
    status, doc = post(es.url, body)
    assert status == 200 and doc["errors"] is True
    statuses = [next(iter(i.values()))["status"] for i in doc["items"]]
    kinds = [next(iter(i.values())).get("error", {}).get("type") for i in doc["items"]]
    assert statuses == [201, 409, 400, 400, 400, 400]
    assert kinds == [None, "version_conflict_engine_exception", "document_parsing_exception",
                     "illegal_argument_exception", "document_parsing_exception",
                     "invalid_index_name_exception"]


def test_gzip_bodies_and_filter_path_are_understood(es: EsServer) -> None:
    status, doc = post(es.url, gzip.compress(PAIR), {**NDJSON, "Content-Encoding": "gzip"},
                       path="/_bulk?filter_path=items.*.status")
    assert status == 200 and doc == {"items": [{"create": {"status": 201}}]}


def test_filter_path_keeps_only_the_listed_paths() -> None:
    doc = {"took": 3, "errors": True, "items": [{"create": {"_id": "1", "status": 409,
                                                            "error": {"type": "x"}}}]}
    assert apply_filter_path(doc, "errors,items.*.error.type") == {
        "errors": True, "items": [{"create": {"error": {"type": "x"}}}]}


def test_credentials_are_checked_when_configured() -> None:
    with EsServer(users={"u": "p"}) as srv:
        status, doc = post(srv.url, PAIR)
        assert status == 401 and doc["error"]["type"] == "security_exception"


def test_faults_fire_the_given_number_of_times(es: EsServer) -> None:
    es.add_fault(Fault(status=429, times=1))
    es.add_fault(Fault(item_status=503, every=2, times=1))
    assert post(es.url, PAIR)[0] == 429
    body = PAIR + b'{"create":{"_index":"logs","_id":"2"}}\n{"log":"y"}\n'
    status, doc = post(es.url, body)
    assert [next(iter(i.values()))["status"] for i in doc["items"]] == [201, 503]
    status, doc = post(es.url, b'{"create":{"_index":"logs","_id":"2"}}\n{"log":"y"}\n')
    assert doc["errors"] is False


def test_faults_and_counts_can_be_driven_over_http(es: EsServer) -> None:
    assert post(es.url, b'[{"status": 503, "times": 1}]', path="/_tailrace/faults")[0] == 200
    assert post(es.url, PAIR)[0] == 503
    assert post(es.url, PAIR)[0] == 200
    r = urllib3.PoolManager().request("GET", es.url + "/logs/_count")
    assert orjson.loads(r.data) == {"count": 1}


def test_it_runs_standalone(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "esserver.py"
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--opensearch",
                             "--version", "2.11.0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.rsplit(" ", 1)[1].strip()
        info = orjson.loads(urllib3.PoolManager().request("GET", url + "/").data)
        assert info["version"] == {"distribution": "opensearch", "number": "2.11.0"}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


# -- where the real servers (ES 8.19, OpenSearch 2.19/3.6) answered otherwise, and now alike --
COMPAT = "application/vnd.elasticsearch+x-ndjson;compatible-with=8"


def test_compatibility_media_types_need_accept_on_elasticsearch_and_are_refused_by_opensearch(
        ) -> None:
    with EsServer() as es, EsServer(opensearch=True, version="2.19.6") as os_:
        status, doc = post(es.url, PAIR, {"Content-Type": COMPAT})
        assert status == 400 and doc["error"]["type"] == "media_type_header_exception"
        both = {"Content-Type": COMPAT, "Accept": COMPAT.replace("x-ndjson", "json")}
        assert post(es.url, PAIR, both)[0] == 200
        status, doc = post(os_.url, PAIR, both)
        assert status == 406 and "is not supported" in doc["error"]


def test_a_date_that_does_not_exist_is_a_parsing_error_without_index_fields(
        es: EsServer) -> None:
    body = (b'{"create":{"_index":"d","_id":"1"}}\n{"seen":"2024-01-02T03:04:05Z"}\n'
            b'{"create":{"_index":"d","_id":"2"}}\n{"seen":"2024-13-45T99:00:00Z"}\n')
    status, doc = post(es.url, body)
    item = doc["items"][1]["create"]
    assert status == 200 and item["status"] == 400
    err = item["error"]
    assert err["type"] == "document_parsing_exception" and "index" not in err
    assert "failed to parse field [seen] of type [date]" in err["reason"]
    assert err["caused_by"]["type"] == "illegal_argument_exception"


def test_an_index_template_with_data_stream_makes_opensearch_take_a_data_stream() -> None:
    with EsServer(opensearch=True, version="2.19.6") as es:
        http = urllib3.PoolManager()
        http.request("PUT", es.url + "/_index_template/t", body=orjson.dumps(
            {"index_patterns": ["app-*"], "data_stream": {}}), headers=NDJSON)
        status, doc = post(es.url, b'{"index":{"_index":"app-x"}}\n{"a":1}\n'
                                   b'{"create":{"_index":"app-x","_id":"1"}}\n{"a":1}\n')
        first, second = (next(iter(i.values())) for i in doc["items"])
        assert first["status"] == 400 and "op_type of create" in first["error"]["reason"]
        assert second["status"] == 400
        assert "single-valued timestamp field '@timestamp'" in second["error"]["caused_by"][
            "reason"]

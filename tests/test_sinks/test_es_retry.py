"""What each bulk answer means for each document: delivered, retried or dead-lettered."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sinks.es.retry import judge
from sinks.es.transport import BulkResponse


def answer(*items: tuple[int, str | None], status: int = 200) -> BulkResponse:
    out: list[dict[str, Any]] = []
    for st, kind in items:
        body: dict[str, Any] = {"status": st}
        if kind:
            body["error"] = {"type": kind, "reason": f"{kind} happened",
                             "caused_by": {"type": "number_format_exception",
                                           "reason": 'For input string: "abc"'}}
        out.append({"create": body})
    errors = any(st >= 300 for st, _ in items)
    return BulkResponse(status, orjson.dumps({"errors": errors, "items": out}), "http://es:9200")


def test_each_item_is_judged_on_its_own() -> None:
    v = judge(answer((201, None), (409, "version_conflict_engine_exception"),
                     (429, "es_rejected_execution_exception"),
                     (400, "document_parsing_exception"), (503, "unavailable_shards_exception"),
                     (404, "index_not_found_exception")), 6)
    assert v.delivered == 2 and v.conflicts == 1
    assert v.retry == [2, 4]
    assert [i for i, _ in v.rejected] == [3, 5]
    assert v.rejected[0][1] == ('400 document_parsing_exception: document_parsing_exception '
                                'happened (caused by number_format_exception: For input '
                                'string: "abc")')
    assert v.reason.startswith("429 es_rejected_execution_exception")


def test_a_full_disk_block_is_retried_whatever_its_status() -> None:
    v = judge(answer((403, "cluster_block_exception"), (429, "cluster_block_exception")), 2)
    assert v.retry == [0, 1] and not v.rejected


def test_a_409_that_is_not_a_create_conflict_is_rejected() -> None:
    v = judge(answer((409, "some_other_conflict")), 1)
    assert v.rejected and not v.delivered


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_request_level_throttling_and_server_errors_retry_every_document(status: int) -> None:
    resp = BulkResponse(status, b'{"error":{"type":"x","reason":"busy"},"status":%d}' % status,
                        "http://es:9200")
    v = judge(resp, 3)
    assert v.retry == [0, 1, 2] and not v.rejected and not v.config_problem
    assert "busy" in v.reason and "http://es:9200" in v.reason


@pytest.mark.parametrize("status, advice", [(401, "http_passwd"), (403, "privilege"),
                                            (404, "path prefix")])
def test_auth_and_url_problems_hold_the_data_back_and_say_what_to_fix(status: int,
                                                                      advice: str) -> None:
    v = judge(BulkResponse(status, b"", "http://es:9200"), 2)
    assert v.retry == [0, 1] and v.config_problem
    assert advice in v.reason


def test_other_request_level_4xx_rejects_the_documents_with_the_reason() -> None:
    body = (b'{"error":{"type":"illegal_argument_exception","reason":"The bulk request must '
            b'be terminated by a newline [\\\\n]"},"status":400}')
    v = judge(BulkResponse(400, body, "http://es:9200"), 2)
    assert [i for i, _ in v.rejected] == [0, 1]
    assert "illegal_argument_exception" in v.rejected[0][1]


def test_413_asks_for_a_split() -> None:
    assert judge(BulkResponse(413, b"", "h"), 10).split


@pytest.mark.parametrize("body", [b"<html>proxy error</html>", b'{"errors":true}',
                                  b'{"errors":true,"items":[{"create":{"status":201}}]}'])
def test_an_answer_that_does_not_account_for_every_document_retries_them(body: bytes) -> None:
    v = judge(BulkResponse(200, body, "h"), 2)
    assert v.retry == [0, 1] and not v.delivered


def test_a_clean_answer_without_items_delivers_everything() -> None:
    v = judge(BulkResponse(200, b'{"errors":false}', "h"), 5)
    assert v.delivered == 5 and not v.retry

"""Records to Bulk API bodies: index names, create actions, sources, request sizes."""

from __future__ import annotations

import orjson
import pytest
from sinkdata import BASE_TIME, make_records

from sinks.es.config import ElasticsearchOutputOptions
from sinks.es.formatting import BulkFormatter, IndexTemplate, format_timestamp


def fmt(**options: object) -> BulkFormatter:
    return BulkFormatter(ElasticsearchOutputOptions(name="es", **options))  # type: ignore[arg-type]


def pairs(body: bytes) -> list[tuple[dict[str, object], dict[str, object]]]:
    assert body.endswith(b"\n")
    lines = body.split(b"\n")[:-1]
    assert len(lines) % 2 == 0
    return [(orjson.loads(lines[i]), orjson.loads(lines[i + 1])) for i in range(0, len(lines), 2)]


def test_every_document_is_a_create_with_the_record_id() -> None:
    (chunk,) = fmt(index="logs").build(make_records(3)).chunks
    docs = pairs(chunk.body)
    assert [a for a, _ in docs] == [{"create": {"_index": "logs", "_id": f"r{i:07d}"}}
                                    for i in range(3)]


def test_source_drops_reserved_fields_and_writes_time_as_timestamp() -> None:
    f = fmt(index="logs")
    rec = {"_id": "x", "_tag": "web", "_raw": b"\xff", "time": BASE_TIME + 0.25, "log": "hi",
           "kubernetes": {"pod": "p"}}
    (chunk,) = f.build([rec]).chunks
    (_, source), = pairs(chunk.body)
    assert source == {"log": "hi", "kubernetes": {"pod": "p"},
                      "@timestamp": "2023-11-14T22:13:20.250Z"}
    assert rec["_id"] == "x" and rec["time"] == BASE_TIME + 0.25, "the record is left intact"


def test_tag_and_time_keys_are_configurable() -> None:
    f = fmt(index="logs", include_tag_key=True, tag_key="source_tag", time_key="ts",
            time_key_nanos=True)
    (chunk,) = f.build([{"_id": "x", "_tag": "web", "time": BASE_TIME + 0.5}]).chunks
    (_, source), = pairs(chunk.body)
    assert source == {"source_tag": "web", "ts": "2023-11-14T22:13:20.500000000Z"}


def test_index_uses_the_record_time_in_utc_not_the_clock() -> None:
    t = IndexTemplate("logs-%Y.%m.%d")
    assert t.render({}, BASE_TIME) == b'"logs-2023.11.14"'
    assert t.render({}, BASE_TIME + 86400) == b'"logs-2023.11.15"'
    hourly = IndexTemplate("logs-%Y.%m.%d.%H")
    assert hourly.render({}, BASE_TIME + 3600) == b'"logs-2023.11.14.23"'


def test_index_takes_record_fields_nested_or_dotted_without_strftime_on_them() -> None:
    t = IndexTemplate("app-${record.kubernetes.namespace}-${record.env}-%Y")
    rec = {"kubernetes": {"namespace": "shop"}, "env": "100%d"}
    assert t.render(rec, BASE_TIME) == b'"app-shop-100%d-2023"'
    assert t.render({"kubernetes.namespace": "flat", "env": "x"}, BASE_TIME) == b'"app-flat-x-2023"'


def test_a_record_missing_an_index_field_is_rejected_with_the_reason() -> None:
    f = fmt(index="app-${record.service}")
    built = f.build([{"_id": "a", "_tag": "t", "time": BASE_TIME, "service": "cart"},
                     {"_id": "b", "_tag": "t", "time": BASE_TIME}])
    assert [r["_id"] for c in built.chunks for r in c.records] == ["a"]
    (rej,) = built.rejected
    assert rej.record["_id"] == "b"
    assert "needs field 'service'" in rej.reason


def test_a_time_based_index_rejects_a_record_without_time() -> None:
    built = fmt(index="logs-%Y").build([{"_id": "a", "_tag": "t"}])
    assert not built.chunks
    assert "needs the record's time" in built.rejected[0].reason


def test_a_static_index_takes_a_record_without_time_and_omits_the_timestamp() -> None:
    (chunk,) = fmt(index="logs").build([{"_id": "a", "_tag": "t", "log": "x"}]).chunks
    assert pairs(chunk.body)[0][1] == {"log": "x"}


def test_data_stream_is_the_target_name() -> None:
    (chunk,) = fmt(data_stream="logs-nginx-default").build(make_records(1)).chunks
    action, source = pairs(chunk.body)[0]
    assert action == {"create": {"_index": "logs-nginx-default", "_id": "r0000000"}}
    assert "@timestamp" in source


def test_values_json_cannot_hold_are_converted_or_the_record_rejected() -> None:
    f = fmt(index="logs")
    recs = [{"_id": "a", "_tag": "t", "raw": b"\xffbytes", "big": 2**70}]
    (chunk,) = f.build(recs).chunks
    src = pairs(chunk.body)[0][1]
    assert src == {"raw": "\ufffdbytes", "big": str(2**70)}
    bad = f.build([{"_id": "b", "_tag": "t", "obj": object()}])
    assert not bad.chunks and "not serialisable" in bad.rejected[0].reason


def test_requests_are_cut_by_document_count_and_bytes_keeping_order() -> None:
    recs = make_records(250)
    by_count = fmt(index="logs", batch_docs=100).build(recs).chunks
    assert [len(c.records) for c in by_count] == [100, 100, 50]
    assert [len(pairs(c.body)) for c in by_count] == [100, 100, 50]
    one = len(fmt(index="logs").line(recs[0]))
    by_bytes = fmt(index="logs", batch_bytes=one * 4).build(recs).chunks
    assert all(len(c.body) <= one * 4 + 10 for c in by_bytes)
    assert all(len(pairs(c.body)) == len(c.records) for c in by_bytes)
    ids = [r["_id"] for c in by_bytes for r in c.records]
    assert ids == [r["_id"] for r in recs]


def test_a_document_larger_than_batch_bytes_goes_alone() -> None:
    f = fmt(index="logs", batch_bytes=500)
    recs = make_records(3)
    recs[1]["log"] = "x" * 2000
    assert [len(c.records) for c in f.build(recs).chunks] == [1, 1, 1]


@pytest.mark.parametrize("t, expected", [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (BASE_TIME + 0.9999, "2023-11-14T22:13:20.999Z"),
])
def test_timestamps_are_iso8601_utc_with_milliseconds(t: float, expected: str) -> None:
    assert format_timestamp(t) == expected


def test_options_refuse_index_with_data_stream_and_credentials_in_urls() -> None:
    with pytest.raises(ValueError, match="either index or data_stream"):
        ElasticsearchOutputOptions(name="es", index="a", data_stream="logs-a-b")
    with pytest.raises(ValueError, match="credentials in the URL"):
        ElasticsearchOutputOptions(name="es", hosts=["http://u:p@es:9200"])
    with pytest.raises(ValueError, match="go together"):
        ElasticsearchOutputOptions(name="es", http_user="elastic")
    with pytest.raises(ValueError, match="must be a URL"):
        ElasticsearchOutputOptions(name="es", hosts=["es:9200"])


def test_record_field_parts_survive_the_configs_env_expansion() -> None:
    from helpers import load_test_config

    config = load_test_config(
        "pipeline:\n  outputs:\n    - name: es\n"
        "      index: 'app-${record.kubernetes.namespace}-${SUFFIX:-x}-%Y'\n")
    (out,) = config.outputs
    assert out.options.index == "app-${record.kubernetes.namespace}-x-%Y"
    rec = {"kubernetes": {"namespace": "shop"}}
    assert IndexTemplate(out.options.index).render(rec, BASE_TIME) == b'"app-shop-x-2023"'

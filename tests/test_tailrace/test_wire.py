"""Wire format v1: round trips and defensive decoding."""

from __future__ import annotations

import msgpack
import orjson
import pytest

from tailrace.errors import RecordError
from tailrace.wire import (
    JsonBatch,
    RawBatch,
    decode_processed,
    decode_raw,
    decode_records,
    encode_processed,
    encode_raw,
    encode_records,
)


def batch(**kw: object) -> RawBatch:
    base = dict(agent="a", input="tail.0", tag="t", path="/x.log", file="a:1:2:3", start=0,
                end=8, lines=[b"one", b"two"], offsets=[0, 4])
    base.update(kw)
    return RawBatch(**base)  # type: ignore[arg-type]


def fields(payload: bytes) -> dict[bytes, bytes]:
    return {b"v": b"1", b"b": payload}


def test_raw_batch_round_trips_with_binary_lines() -> None:
    b = batch(lines=[b"\xff\xfe binary", b"ok"], times=[1.5, 2.0], streams=["stdout", "stderr"],
              meta={"kubernetes.pod": "p"})
    assert decode_raw(fields(encode_raw(b))) == b


def test_processed_batch_round_trips() -> None:
    recs = [{"_id": "x-1", "_tag": "t", "log": "hi", "time": 1.25}]
    assert decode_records(fields(encode_records(recs))) == recs


@pytest.mark.parametrize("payload, reason", [
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb([1, 2]), "must be a map"),
    (msgpack.packb({"agent": "a"}), "'input' must be a string"),
    (encode_raw(batch(offsets=[0])), "2 lines but 1 offsets"),
    (encode_raw(batch(start=9, end=8)), "0 <= start <= end"),
    (encode_raw(batch(lines=["text", b"x"])), "must all be bytes"),
])
def test_malformed_raw_entries_raise_record_error(payload: bytes, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        decode_raw(fields(payload))


def test_unknown_version_is_refused_with_advice() -> None:
    with pytest.raises(RecordError, match="unsupported wire format version"):
        decode_raw({b"v": b"2", b"b": encode_raw(batch())})


def test_records_without_id_or_tag_are_refused() -> None:
    with pytest.raises(RecordError, match="_id"):
        decode_records(fields(msgpack.packb([{"log": "x"}])))
    with pytest.raises(RecordError, match="_tag"):
        decode_records(fields(msgpack.packb([{"_id": "1"}])))


def test_the_batch_read_time_round_trips_and_is_checked() -> None:
    b = batch(time=1700000000.5)
    assert decode_raw(fields(encode_raw(b))).time == 1700000000.5
    assert decode_raw(fields(encode_raw(batch()))).time is None
    doc = msgpack.unpackb(encode_raw(batch()))
    doc["time"] = "noon"
    with pytest.raises(RecordError, match="'time' must be a number"):
        decode_raw(fields(msgpack.packb(doc)))


# -- processed batches, version 2 ------------------------------------------------------
def v2(records: list[dict[str, object]]) -> dict[bytes, bytes]:
    return {b"v": b"2", b"b": encode_processed(records)}


def sample(n: int, tag: str = "web") -> list[dict[str, object]]:
    return [{"log": f"line {i}", "time": 1.7e9 + i / 8, "_id": f"id-{i}", "_tag": tag,
             "code": 200 + i, "kubernetes": {"pod": "p", "labels": {"a": "b"}}, "ok": i % 2 == 0}
            for i in range(n)]


def test_v2_carries_each_record_as_the_json_line_a_file_output_writes() -> None:
    records = sample(250) + sample(3, tag="other")  # over two slices, two tags
    batch = decode_processed(v2(records))
    assert isinstance(batch, JsonBatch)
    assert batch.json() == b"".join(orjson.dumps(r) + b"\n" for r in records)
    assert batch.tags == ["web"] * 250 + ["other"] * 3
    assert batch.times == [r["time"] for r in records]
    assert batch.records() == records == decode_records(v2(records))
    assert len(batch) == 253 and batch[251] == records[251] and list(batch)[:2] == records[:2]


def test_v2_keeps_the_original_bytes_of_a_line_that_was_not_utf8() -> None:
    records = sample(3)
    records[1]["_raw"] = b"caf\xe9"
    records[1]["log"] = "caf\ufffd"
    batch = decode_processed(v2(records))
    assert isinstance(batch, JsonBatch)
    assert b"_raw" not in batch.json()  # JSON has the text; the bytes travel beside it
    assert batch.records()[1]["_raw"] == b"caf\xe9"
    assert batch.select([1, 2]).records()[0]["_raw"] == b"caf\xe9"
    assert JsonBatch.concat([batch, batch]).records()[4]["_raw"] == b"caf\xe9"


def test_v2_times_that_are_not_numbers_travel_as_none() -> None:
    records = sample(2)
    records[0]["time"] = "yesterday"
    del records[1]["time"]
    batch = decode_processed(v2(records))
    assert isinstance(batch, JsonBatch) and batch.times == [None, None]


@pytest.mark.parametrize("bad", [[{"_id": "x"}], [{"_id": "x", "_tag": 5}],
                                 [{"_id": "x", "_tag": "t"}, {"_id": "y", "_tag": None}],
                                 [{"_id": "x", "_tag": "t", "v": {1, 2}}]])
def test_v2_refuses_to_encode_a_record_without_a_text_tag_or_with_a_set(
        bad: list[dict[str, object]]) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_processed(bad)


@pytest.mark.parametrize("doc, reason", [
    ({"n": 2, "json": b'{"a":1}\n', "tag": "t", "times": [1, 2]}, "says 2 records"),
    ({"n": 1, "json": b'{"a":1}\n{"a":2}\n', "tag": "t", "times": [1]}, "says 1 records"),
    ({"n": 1, "json": b'{"a":1}\n', "tags": [1], "times": [1]}, "'tag'"),
    ({"n": 1, "json": b'{"a":1}\n', "tag": "t"}, "'times'"),
    ({"n": 1, "json": b'{"a":1}\n', "tag": "t", "times": [1], "raw": [[3, b"x"]]}, "'raw'"),
    ([1, 2], "must be a map"),
])
def test_malformed_v2_entries_raise_record_error(doc: object, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        decode_processed({b"v": b"2", b"b": msgpack.packb(doc)})


def test_version_1_entries_still_decode_as_records() -> None:
    records = sample(3)
    assert decode_processed({b"v": b"1", b"b": encode_records(records)}) == records

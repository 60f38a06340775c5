"""Wire format v1: round trips and defensive decoding."""

from __future__ import annotations

import msgpack
import pytest

from tailrace.errors import RecordError
from tailrace.wire import RawBatch, decode_raw, decode_records, encode_raw, encode_records


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

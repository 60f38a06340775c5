"""The line serialisations shared by the file and stdout outputs."""

from __future__ import annotations

import io

import msgpack
import orjson
import pytest

from sinks.formats import formatter


def test_json_writes_one_object_per_line_and_raw_bytes_as_text() -> None:
    data = formatter("json")([{"a": 1}, {"b": b"\xffx"}])
    assert [orjson.loads(x) for x in data.splitlines()] == [{"a": 1}, {"b": "\ufffdx"}]
    assert data.endswith(b"\n")


def test_plain_writes_the_original_bytes_when_there_are_any() -> None:
    data = formatter("plain")([{"log": "text"}, {"log": "?", "_raw": b"\xff\xfe"}])
    assert data == b"text\n\xff\xfe\n"


def test_template_fills_missing_fields_with_nothing() -> None:
    assert formatter("template", "{time} {log} {nope}")([{"time": 1.5, "log": "x"}]) == (
        b"1.5 x \n")


def test_msgpack_is_a_stream_of_maps() -> None:
    data = formatter("msgpack")([{"a": 1}, {"a": 2}])
    assert list(msgpack.Unpacker(io.BytesIO(data))) == [{"a": 1}, {"a": 2}]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        formatter("xml")

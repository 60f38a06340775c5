"""The parser filter built straight from a batch's lines gives what the general path gives.

``ParserFilter.process_lines`` (the chain's fast path when the parser is the first filter)
and the compiled regex parser must produce the records ``process`` makes from
``{"log": ...}`` records: same keys in the same order, same values, same rejections and
counters, on many lines that match, do not match, have a bad time, are not valid UTF-8,
leave optional groups out or carry text a type cannot convert.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from pconf import batch, config

from processors.chain import Chain, records_from_batch
from processors.safe_regex import WATCHDOG
from tailrace.wire import RawBatch

NGINX_RE = (r'^(?<remote>[^ ]*) (?<host>[^ ]*) (?<user>[^ ]*) \[(?<time>[^\]]*)\] '
            r'"(?<method>\S+)(?: +(?<path>[^\"]*?)(?: +\S*)?)?" (?<code>[^ ]*) (?<size>[^ ]*)'
            r'(?: "(?<referer>[^\"]*)" "(?<agent>[^\"]*)")?$')
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _lines(seed: int, n: int = 600) -> list[bytes]:
    rng = random.Random(seed)
    out: list[bytes] = []
    stamp = "10/Oct/2024:13:55:36 +0000"
    for _ in range(n):
        if rng.random() < 0.3:  # a new second (else the last one repeats: the memo)
            stamp = (f"{rng.randint(1, 28):02d}/{rng.choice(MONTHS)}/20{rng.randint(10, 30)}:"
                     f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
                     f"{rng.randint(0, 59):02d} {rng.choice(['+0000', '-0700', '+0530'])}")
        kind = rng.random()
        ts = stamp if kind > 0.05 else rng.choice(["99/Foo/2024:00:00:00 +0000", "yesterday"])
        req = rng.choice(["GET /a?b=1 HTTP/1.1", "POST /api/v1/items/7 HTTP/2.0", "GET",
                          "HEAD / HTTP/1.0"])
        size = rng.choice(["512", "-", "0", "12x", "1e3"])
        code = rng.choice(["200", "404", "-", " 500"])
        tail = rng.choice(['', ' "-" "curl/8.0"', ' "https://x.example/" "Mozilla/5.0 (X11)"'])
        line = f'10.0.0.{rng.randint(1, 254)} ex.com - [{ts}] "{req}" {code} {size}{tail}'
        if kind < 0.03:
            line = f"2024/10/10 13:55:36 [error] 12#0: *3 open() failed, client: {kind}"
        raw = line.encode()
        if rng.random() < 0.04:  # not valid UTF-8, matching or not
            cut = rng.randrange(len(raw))
            raw = raw[:cut] + b"\xff\xfe" + raw[cut:]
        out.append(raw)
    return out


PARSER = ("  - {{name: acc, format: regex, regex: '{rx}', time_key: {tk}, "
          "time_format: '%d/%b/%Y:%H:%M:%S %z'{extra}}}\n")


def _config(*, filt: str = "", tk: str = "time", extra: str = "", rx: str = NGINX_RE,
            more: str = "") -> str:
    parsers = "parsers:\n" + PARSER.format(rx=rx.replace("'", "''"), tk=tk, extra=extra) + more
    return (parsers + "pipeline:\n  filters:\n    - {name: parser, key: log, parser: acc"
            + filt + "}\n")


CASES: dict[str, str] = {
    "reserve_data, types": _config(filt=", reserve_data: true",
                                   extra=", types: {code: integer, size: integer}"),
    "reserve_data, preserve_key, error_key": _config(
        filt=", reserve_data: true, preserve_key: true, error_key: err",
        extra=", types: {size: float}"),
    "fields only": _config(extra=", types: {code: hex, size: bool}"),
    "fields only, preserve_key, dead letters": _config(
        filt=", preserve_key: true, unmatched: dead_letter"),
    "time kept, typed time key": _config(filt=", reserve_data: true",
                                         extra=", time_keep: true, types: {time: integer}"),
    "time key kept": _config(filt=", reserve_data: true", extra=", time_keep: true"),
    "time key named otherwise": _config(
        filt=", reserve_data: true", tk="ts",
        rx=NGINX_RE.replace("(?<time>", "(?<ts>").replace("(?<user>", "(?<time>")),
    "no time key group": _config(filt=", reserve_data: true", tk="nope"),
    "groups named like reserved keys": _config(
        filt=", reserve_data: true",
        rx=NGINX_RE.replace("(?<user>", "(?<_id>").replace("(?<method>", "(?<log>")
        .replace("(?<remote>", "(?<stream>")),
    "two parsers in order": _config(
        filt=", reserve_data: true", more="  - {name: j, format: json}\n").replace(
        "parser: acc", "parser: [j, acc]"),
    "a json parser": ("pipeline:\n  filters:\n    - {name: parser, key: log, parser: json, "
                      "reserve_data: true}\n"),
}
JSON_PARSER = ("parsers:\n  - {{name: j, format: json{extra}}}\npipeline:\n  filters:\n"
               "    - {{name: parser, key: log, parser: j{filt}}}\n")
ISO = "'%Y-%m-%dT%H:%M:%S.%L%z'"
#: The json parser compiled inline (compiled.JsonSpec), against its general path.
JSON_CASES: dict[str, str] = {
    "time and types": JSON_PARSER.format(
        extra=f", time_key: ts, time_format: {ISO}, types: {{n: integer, f: float}}",
        filt=", reserve_data: true"),
    "time kept": JSON_PARSER.format(extra=f", time_key: ts, time_format: {ISO}, time_keep: true",
                                    filt=", reserve_data: true, preserve_key: true"),
    "time key without a format": JSON_PARSER.format(extra=", time_key: ts", filt=""),
    "time key named time": JSON_PARSER.format(
        extra=f", time_key: time, time_format: {ISO}", filt=", reserve_data: true"),
    "types only": JSON_PARSER.format(extra=", types: {n: string, b: bool}",
                                     filt=", reserve_data: true, unmatched: dead_letter"),
}


def _json_lines(seed: int, n: int = 600) -> list[bytes]:
    rng = random.Random(seed)
    out: list[bytes] = []
    for i in range(n):
        ts = rng.choice([
            f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}"
            f"{rng.choice(['Z', '+02:00', '-0530', '+0000'])}",
            "2024-13-01T00:00:00.000Z", "yesterday", 1700000000, 1700000000.5, None, True,
            [1], {"a": 1}])
        doc: dict[str, Any] = {"msg": f"m{i}", "n": rng.choice(["7", 7, "x", None]),
                               "f": rng.choice(["1.5", 2, "nan?"]),
                               "b": rng.choice(["true", "no", 0]),
                               "nested": {"k": [1, 2, {"z": None}]}}
        key = rng.choice(["ts", "time", "ts", None])
        if key:
            doc[key] = ts
        if rng.random() < 0.05:
            doc["_id"] = "from-the-line"
        line = orjson.dumps(doc)
        kind = rng.random()
        if kind < 0.04:
            line = rng.choice([b"[1, 2]", b"42", b'"text"', b"null", b"{not json", b""])
        elif kind < 0.07:
            cut = rng.randrange(1, len(line))
            line = line[:cut] + b"\xff" + line[cut:]  # not valid UTF-8
        out.append(line)
    return out


@pytest.mark.parametrize("case", list(JSON_CASES))
@pytest.mark.parametrize("seed", [1, 2])
def test_the_compiled_json_parser_equals_its_general_path(case: str, seed: int) -> None:
    lines = _json_lines(seed)
    raw = batch(lines, meta={"host": "edge-1", "kubernetes.pod": "p-1"}, offset=seed * 1000)
    res_fast, res_general = _run_both(JSON_CASES[case], raw)
    _same(res_fast, res_general)
    assert len(res_fast.records) > len(lines) // 2
    if "time_format" in JSON_CASES[case]:
        assert res_fast.counters["time_errors"] > 0  # bad times were there to compare


@pytest.fixture(autouse=True)
def _fast_path_never_falls_back(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A ``process_lines`` that raises is caught by the chain, which then runs the general
    path: the comparisons would hold without the fast path ever running."""
    yield
    fell_back = [r.getMessage() for r in caplog.get_records("call")
                 if r.name == "processors.chain" and r.levelno >= logging.ERROR]
    assert not fell_back, fell_back


def _run_both(text: str, raw: RawBatch) -> tuple[Any, Any]:
    if raw.time is None:
        raw.time = 1700000000.25  # both paths take the batch's read time
    fast, general = Chain(config(text)), Chain(config(text))
    res_fast = fast.run(raw)
    records, invalid = records_from_batch(raw, "path", 0.0)
    with WATCHDOG.armed():
        res_general = general.run_records(records)
    res_general.invalid_utf8 = invalid
    return res_fast, res_general


def _same(res_fast: Any, res_general: Any) -> None:
    assert [list(r.items()) for r in res_fast.records] == [
        list(r.items()) for r in res_general.records]
    assert [(f, list(r.record.items()), r.reason) for f, r in res_fast.rejected] == [
        (f, list(r.record.items()), r.reason) for f, r in res_general.rejected]
    assert res_fast.counters == res_general.counters
    assert res_fast.invalid_utf8 == res_general.invalid_utf8


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [1, 2])
def test_records_built_from_lines_equal_the_general_path(case: str, seed: int) -> None:
    lines = _lines(seed)
    if case == "a json parser":
        lines = [b'{"a": %d, "time": "01/Jan/2024:00:00:01 +0000", "_id": "x", "host": 1}' % i
                 if i % 3 else ln for i, ln in enumerate(lines)]
    meta = {"host": "edge-1", "kubernetes.pod": "p-1", "kubernetes.ns": "default"}
    raw = batch(lines, meta=meta, offset=seed * 1000)
    raw.time = 1700000000.5
    res_fast, res_general = _run_both(CASES[case], raw)
    _same(res_fast, res_general)
    assert res_fast.records  # the batch was not all rejected: there was something to compare
    pods = [r["kubernetes"] for r in res_fast.records if "kubernetes" in r]
    assert len({id(p) for p in pods}) == len(pods)  # each record owns its nested map


@pytest.mark.parametrize("case", ["reserve_data, types", "fields only"])
def test_lines_with_streams_and_without_metadata_equal_the_general_path(case: str) -> None:
    lines = _lines(3, 300)
    raw = batch(lines, streams=["stdout" if i % 2 else "stderr" for i in range(len(lines))])
    _same(*_run_both(CASES[case], raw))


def test_metadata_in_the_place_of_the_line_takes_the_general_path() -> None:
    raw = batch(_lines(4, 50), meta={"log": "from the agent", "host": "h"})
    res_fast, res_general = _run_both(CASES["reserve_data, types"], raw)
    _same(res_fast, res_general)
    assert all(r.get("log") == "from the agent" for r in res_fast.records)  # meta wins


def test_the_counters_say_what_the_lines_were() -> None:
    lines = [b'1.2.3.4 h - [10/Oct/2024:13:55:36 +0000] "GET / HTTP/1.1" 200 5',
             b"not an access line", b'1.2.3.4 h - [99/Foo/2024:13:55:36 +0000] "GET" 200 -',
             b'1.2.3.4 h - [10/Oct/2024:13:55:36 +0000] "GET /\xff HTTP/1.1" 200 5']
    res = Chain(config(CASES["reserve_data, types"])).run(batch(lines))
    assert res.counters == {"unmatched": 1, "time_errors": 1}
    assert res.invalid_utf8 == 1
    first, unmatched, bad_time, invalid = res.records
    assert first["size"] == 5 and first["time"] == 1728568536.0 and "log" not in first
    assert unmatched["log"] == "not an access line"
    assert bad_time["size"] == "-" and "time_error" in bad_time
    assert bad_time["path"] == "/var/log/x.log"  # no path group: the metadata stays
    assert invalid["_raw"] == lines[3] and invalid["path"] == "/\ufffd"
    assert list(invalid)[:5] == ["time", "_id", "_tag", "path", "_raw"]  # then the fields


def test_a_timed_out_line_is_unmatched_on_the_fast_path_too() -> None:
    text = ("parsers:\n  - {name: acc, format: regex, regex: '^(?<a>a+)+$', "
            "match_budget_ms: 20}\npipeline:\n  filters:\n    - {name: parser, key: log, "
            "parser: acc, reserve_data: true}\n")
    res_fast, res_general = _run_both(text, batch(["aaa", "a" * 40 + "!", "aa"]))
    _same(res_fast, res_general)
    assert res_fast.counters == {"unmatched": 1, "regex_timeouts": 1}
    assert [r.get("a") for r in res_fast.records] == ["aaa", None, "aa"]

"""The parser filter: documented examples, several parsers in order, unmatched lines."""

from __future__ import annotations

from typing import Any

import pytest
from pconf import config, records, run, strip

from tailrace.errors import ConfigError

DUMMY = r"""parsers:
  - name: dummy_test
    format: regex
    regex: '^(?<INT>[^ ]+) (?<FLOAT>[^ ]+) (?<BOOL>[^ ]+) (?<STRING>.+)$'
"""
PARSED = {"INT": "100", "FLOAT": "0.5", "BOOL": "true", "STRING": "This is example"}


def run_with(parsers: str, filters: str, recs: list[dict[str, object]]) -> Any:
    from processors.chain import Chain

    text = parsers + "pipeline:\n  filters:\n" + "".join(
        f"    {ln}\n" for ln in filters.strip("\n").splitlines())
    return Chain(config(text)).run_records(recs)


def test_documented_example_parses_key_name_data() -> None:
    res = run_with(DUMMY, "- {name: parser, match: 'dummy.*', key_name: data, "
                   "parser: dummy_test}",
                   records({"data": "100 0.5 true This is example"}, tag="dummy.data"))
    assert strip(res.records) == [PARSED]


def test_documented_reserve_data_keeps_other_fields_and_preserve_key_the_source() -> None:
    rec = {"data": "100 0.5 true This is example", "key1": "value1", "key2": "value2"}
    res = run_with(DUMMY, "- {name: parser, key_name: data, parser: dummy_test, "
                   "reserve_data: on}", records(rec))
    assert strip(res.records) == [{**PARSED, "key1": "value1", "key2": "value2"}]
    res = run_with(DUMMY, "- {name: parser, key_name: data, parser: dummy_test, "
                   "reserve_data: on, preserve_key: on}", records(rec))
    assert strip(res.records) == [{**rec, **PARSED}]


def test_several_parsers_are_tried_in_order() -> None:
    res = run("- {name: parser, key: log, parser: [json, logfmt]}",
              records({"log": '{"a": 1}'}, {"log": "a=2 b=x"}, {"log": "=!"}))
    assert strip(res.records) == [{"a": 1}, {"a": "2", "b": "x"}, {"log": "=!"}]
    assert res.counters["unmatched"] == 1


def test_parsed_time_becomes_the_record_time_and_reserved_keys_survive() -> None:
    res = run("- {name: parser, key: log, parser: json}",
              records({"log": '{"time": "01/Jan/2024:00:00:01 +0000", "_id": "x", '
                              '"_tag": "y", "m": 1}'}))
    rec = res.records[0]
    assert rec["time"] == 1704067201.0 and rec["_id"] == "id-0" and rec["_tag"] == "test"


def test_the_stock_json_parser_with_an_iso_time_keeps_the_fields_and_the_read_time() -> None:
    # Issue 12 item 8: the stock json parser's time format is nginx's; an ISO time used to
    # leave the whole line unparsed.
    res = run("- {name: parser, key: log, parser: json}",
              records({"log": '{"time": "2024-01-01T00:00:00Z", "a": 1}'}))
    rec = res.records[0]
    assert rec["a"] == 1 and rec["time"] == 1.0  # the read time
    assert rec["time_error"].startswith("time '2024-01-01T00:00:00Z' does not match")
    assert res.counters["time_errors"] == 1 and res.counters["unmatched"] == 0


def test_a_later_parser_that_reads_the_time_wins_over_one_that_could_not() -> None:
    res = run_with(
        "parsers:\n  - {name: iso, format: json, time_key: time, "
        "time_format: '%Y-%m-%dT%H:%M:%S%z'}\n",
        "- {name: parser, key: log, parser: [json, iso, logfmt]}",
        records({"log": '{"time": "2024-01-01T00:00:00Z", "a": 1}'},
                {"log": '{"time": "yesterday", "a": 2}'}))
    first, second = res.records
    assert first["time"] == 1704067200.0 and "time_error" not in first
    assert second["time"] == 1.0 and second["a"] == 2 and "(parser 'json')" in second[
        "time_error"]
    assert res.counters["time_errors"] == 1  # once per line, not once per parser


def test_unmatched_lines_are_kept_with_an_error_key_or_dead_lettered() -> None:
    res = run("- {name: parser, key: log, parser: nginx, error_key: parse_error}",
              records({"log": "garbage"}))
    assert res.records[0]["parse_error"] == "parser 'nginx' did not match"
    assert res.records[0]["log"] == "garbage"
    res = run("- {name: parser, alias: p, key: log, parser: nginx, unmatched: dead_letter}",
              records({"log": "garbage"}, {"log": "more garbage"}))
    assert res.records == []
    assert [(fid, rej.reason) for fid, rej in res.rejected] == [
        ("p", "parser 'nginx' did not match")] * 2


def test_records_without_the_key_pass_through() -> None:
    res = run("- {name: parser, key: message, parser: json}", records({"log": "{}"}))
    assert strip(res.records) == [{"log": "{}"}]


def test_an_unknown_parser_is_a_config_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown parser 'ngnix'.*nginx"):
        config("pipeline:\n  filters:\n    - {name: parser, key: log, parser: ngnix}\n")

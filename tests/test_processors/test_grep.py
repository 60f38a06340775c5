"""The grep filter, with Fluent Bit's documented examples."""

from __future__ import annotations

import re

import pytest
from pconf import config, records, run, strip

from tailrace.errors import ConfigError

LINES = ["aaa", "aab", "bbb", "ccc", "ddd", "eee", "fff", "ggg"]


def test_documented_regex_log_aa_keeps_lines_starting_with_aa() -> None:
    res = run("- {name: grep, match: '*', regex: log aa}", records(*({"log": x} for x in LINES)))
    assert [r["log"] for r in res.records] == ["aaa", "aab"]
    assert res.counters["dropped"] == 6


def test_documented_nested_exclude_with_record_accessor() -> None:
    k8s = {"pod_name": "myapp-0", "namespace_name": "default", "labels": {"app": "myapp"}}
    recs = records({"log": "something", "kubernetes": k8s},
                   {"log": "other", "kubernetes": {**k8s, "labels": {"app": "web"}}})
    res = run("""- name: grep
  match: '*'
  exclude: $kubernetes['labels']['app'] myapp""", recs)
    assert [r["log"] for r in res.records] == ["other"]


def test_documented_missing_key_fails_a_regex_rule() -> None:
    recs = records({"iot_timestamp": "2024-01-02T00:00:00"}, {"other": 1},
                   {"iot_timestamp": ""})
    res = run(r"- {name: grep, match: 'iots_thread.*', regex: 'iot_timestamp ^\d{4}-\d{2}-\d{2}'}",
              [{**r, "_tag": "iots_thread.1"} for r in recs])
    assert strip(res.records) == [{"iot_timestamp": "2024-01-02T00:00:00"}]


def test_documented_logical_op_or_keeps_records_matching_any_regex() -> None:
    recs = records({"endpoint": "localhost", "value": "something"},
                   {"endpoint": "localhost", "value": "error"},
                   {"endpoint": "localhost", "value": "fine"})
    res = run("""- name: grep
  match: '*'
  logical_op: or
  regex:
    - value something
    - value error""", recs)
    assert [r["value"] for r in res.records] == ["something", "error"]


def test_logical_op_and_needs_every_rule() -> None:
    recs = records({"a": "x1", "b": "y"}, {"a": "x2", "b": "z"})
    res = run("- {name: grep, logical_op: AND, regex: ['a ^x', 'b ^y']}", recs)
    assert [r["a"] for r in res.records] == ["x1"]
    res = run("- {name: grep, logical_op: and, exclude: ['a ^x', 'b ^y']}", recs)
    assert [r["a"] for r in res.records] == ["x2"]  # dropped only where both match
    res = run("- {name: grep, logical_op: or, exclude: ['a 1$', 'b ^z']}", recs)
    assert res.records == []


def test_legacy_mode_requires_every_regex_and_no_exclude() -> None:
    recs = records({"log": "GET /a 200"}, {"log": "GET /healthz 200"}, {"log": "POST /a 500"})
    res = run("- {name: grep, regex: [log ^GET, log 200$], exclude: log healthz}", recs)
    assert [r["log"] for r in res.records] == ["GET /a 200"]


def test_logical_op_with_both_kinds_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="either regex or exclude"):
        config("pipeline:\n  filters:\n    - {name: grep, logical_op: or, regex: a b, "
               "exclude: c d}\n")


def test_invalid_rules_are_config_errors_that_say_the_expected_form() -> None:
    with pytest.raises(ConfigError, match="expected 'KEY REGEX'"):
        config("pipeline:\n  filters:\n    - {name: grep, regex: onlykey}\n")
    with pytest.raises(ConfigError, match="invalid regex for key 'log'"):
        config("pipeline:\n  filters:\n    - {name: grep, regex: 'log (unclosed'}\n")


def test_non_text_values_match_by_their_string_form() -> None:
    res = run("- {name: grep, regex: 'code ^5'}", records({"code": 503}, {"code": 200}))
    assert [r["code"] for r in res.records] == [503]


@pytest.mark.parametrize("pattern", ["^/healthz", "error", "^a.b", "x|y", "^$"])
def test_literal_rules_take_a_shortcut_that_matches_exactly_like_the_regex(pattern: str) -> None:
    mixed = ["/healthz", "/healthz/x", "x/healthz", "an error", "a.b", "axb", "y", "", 5]
    for values in (mixed, mixed[:-1]):  # all text: a batch-wide shortcut; else per record
        for kind in ("regex", "exclude"):
            res = run(f"- {{name: grep, {kind}: 'v {pattern}'}}",
                      records(*({"v": v} for v in values)))
            expected = [v for v in values
                        if bool(re.search(pattern, str(v))) is (kind == "regex")]
            assert [r["v"] for r in res.records] == expected

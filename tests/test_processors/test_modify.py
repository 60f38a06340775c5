"""The modify filter: Fluent Bit's rules, their order, and its conditions."""

from __future__ import annotations

import pytest
from pconf import config, records, run, strip

from tailrace.errors import ConfigError

MEM = {"Mem.total": 1016044, "Mem.used": 841388, "Mem.free": 174656,
       "Swap.total": 2064380, "Swap.used": 139888, "Swap.free": 1924492}


def test_documented_usage_rename_and_add() -> None:
    res = run("- {name: modify, rename: Key2 RenamedKey, add: OtherKey Value3}",
              records({"Key1": "Value1", "Key2": "Value2"}))
    assert strip(res.records) == [{"Key1": "Value1", "RenamedKey": "Value2",
                                   "OtherKey": "Value3"}]


def test_documented_example_1_add_and_rename() -> None:
    res = run("""- name: modify
  match: '*'
  add:
    - Service1 SOMEVALUE
    - Service3 SOMEVALUE3
    - Mem.total2 TOTALMEM2
  rename:
    - Mem.free MEMFREE
    - Mem.used MEMUSED
    - Swap.total SWAPTOTAL
  rules: [Add Mem.total TOTALMEM]""", records(MEM))
    assert strip(res.records) == [{
        "Mem.total": 1016044, "MEMUSED": 841388, "MEMFREE": 174656, "SWAPTOTAL": 2064380,
        "Swap.used": 139888, "Swap.free": 1924492, "Service1": "SOMEVALUE",
        "Service3": "SOMEVALUE3", "Mem.total2": "TOTALMEM2"}]


def test_documented_example_2_conditional_add_and_remove() -> None:
    res = run("""- name: modify
  match: 'mem.*'
  condition: [Key_Does_Not_Exist cpustats, Key_Exists Mem.used]
  set: cpustats UNKNOWN
- name: modify
  match: 'mem.*'
  condition: Key_Value_Does_Not_Equal cpustats KNOWN
  add: sourcetype memstats
- name: modify
  match: 'mem.*'
  condition: Key_Value_Equals cpustats UNKNOWN
  remove_wildcard: [Mem, Swap]
  add: cpustats_more STILL_UNKNOWN""", records(MEM, tag="mem.local"))
    assert strip(res.records) == [{"cpustats": "UNKNOWN", "sourcetype": "memstats",
                                   "cpustats_more": "STILL_UNKNOWN"}]


def test_documented_example_3_emoji_rules_apply_in_order() -> None:
    res = run("""- name: modify
  match: '*'
  rules:
    - Remove_Wildcard Mem
    - Remove_Wildcard Swap
    - Set This_plugin_is_on 🔥
    - Set 🔥 is_hot
    - Copy 🔥 💦
    - Rename  💦 ❄️
    - Set ❄️ is_cold
    - Set 💦 is_wet""", records(MEM))
    assert strip(res.records) == [{"This_plugin_is_on": "🔥", "🔥": "is_hot", "❄️": "is_cold",
                                   "💦": "is_wet"}]


def test_operations_apply_in_the_order_their_keys_appear() -> None:
    res = run("- {name: modify, copy: a b, set: {a: 2}}", records({"a": 1}))
    assert strip(res.records) == [{"a": 2, "b": 1}]
    res = run("- {name: modify, set: {a: 2}, copy: a b}", records({"a": 1}))
    assert strip(res.records) == [{"a": 2, "b": 2}]


def test_soft_and_hard_rename_and_copy() -> None:
    rec = {"a": 1, "b": 2}
    assert strip(run("- {name: modify, rename: a b}", records(rec)).records) == [rec]
    assert strip(run("- {name: modify, hard_rename: a b}", records(rec)).records) == [{"b": 1}]
    assert strip(run("- {name: modify, copy: a b}", records(rec)).records) == [rec]
    assert strip(run("- {name: modify, hard_copy: a b}", records(rec)).records) == [
        {"a": 1, "b": 1}]


def test_remove_regex_and_move_to_start_and_end() -> None:
    rec = {"x1": 1, "keep": 2, "x2": 3, "y": 4}
    out = run(r"- {name: modify, remove_regex: '^x\d$'}", records(rec)).records[0]
    assert strip([out]) == [{"keep": 2, "y": 4}] and "time" in out
    out = run("- {name: modify, move_to_start: y}", records(rec)).records[0]
    assert list(out)[0] == "y"
    out = run("- {name: modify, move_to_end: x*}", records(rec)).records[0]
    assert list(out)[-2:] == ["x1", "x2"]


def test_nested_keys_through_the_record_accessor() -> None:
    res = run("""- name: modify
  condition: "Key_value_matches $kubernetes['ns'] ^prod"
  rules:
    - {set: ["$kubernetes['tier']", gold]}
    - {remove: "$kubernetes['pod']"}""",
              records({"kubernetes": {"ns": "prod-eu", "pod": "p"}},
                      {"kubernetes": {"ns": "dev", "pod": "p"}}))
    assert [r["kubernetes"] for r in res.records] == [{"ns": "prod-eu", "tier": "gold"},
                                                      {"ns": "dev", "pod": "p"}]


@pytest.mark.parametrize("condition, expected", [
    ("Key_exists a", [True, False]),
    ("Key_does_not_exist a", [False, True]),
    ("A_key_matches ^a$", [True, False]),
    ("No_key_matches ^a$", [False, True]),
    ("Key_value_equals a 1", [True, False]),
    ("Key_value_does_not_equal a 2", [True, False]),
    ("Key_value_matches a ^\\d$", [True, False]),
    ("Key_value_does_not_match a ^x", [True, False]),
    ("Matching_keys_have_matching_values ^[ab]$ ^\\d$", [True, True]),
    ("Matching_keys_do_not_have_matching_values ^b$ ^\\d$", [True, False]),
])
def test_each_condition(condition: str, expected: list[bool]) -> None:
    res = run(f"- {{name: modify, condition: '{condition}', set: {{hit: yes}}}}",
              records({"a": 1}, {"b": 2}))
    assert [r.get("hit") is True for r in res.records] == expected


def test_reserved_keys_cannot_be_changed_and_bad_rules_say_the_expected_form() -> None:
    for bad, msg in [("remove: _id", "reserved key '_id'"), ("set: _tag x", "reserved"),
                     ("rename: time t", "timestamp"), ("rename: onlyone", "'KEY VALUE'"),
                     ("condition: Key_is_pink a", "unknown condition"),
                     ("rules: [Explode a]", "unknown modify rule")]:
        with pytest.raises(ConfigError, match=msg):
            config(f"pipeline:\n  filters:\n    - {{name: modify, {bad}}}\n")


def test_wildcard_rules_never_touch_reserved_keys() -> None:
    out = run("- {name: modify, remove_wildcard: ['*', '_']}", records({"a": 1})).records[0]
    assert out == {"time": 1.0, "_id": "id-0", "_tag": "test"}


def test_resolved_options_validate_again_to_the_same_rules() -> None:
    from processors.filters.modify import ModifyOptions

    o = ModifyOptions.model_validate({"name": "modify", "copy": "a b", "set": {"a": 2},
                                      "condition": "Key_exists a"})
    again = ModifyOptions.model_validate(o.model_dump(by_alias=True))
    assert again.rules == o.rules == [("copy", ("a", "b")), ("set", ("a", 2))]
    assert again.condition == o.condition


def test_unconditional_set_and_remove_steps_apply_in_order_to_every_record() -> None:
    # The plan of set/remove steps runs one step over the whole batch at a time.
    res = run("- {name: modify, set: {a: 1, b: 2}, remove: a}",
              records({"a": 0, "c": 3}, {"b": 0}, {}))
    assert strip(res.records) == [{"c": 3, "b": 2}, {"b": 2}, {"b": 2}]
    res = run("- {name: modify, remove: a, set: {a: 1}}", records({"a": 0, "c": 3}, {}))
    assert strip(res.records) == [{"a": 1, "c": 3}, {"a": 1}]

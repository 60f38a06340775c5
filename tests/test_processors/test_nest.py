"""The nest filter, with Fluent Bit's documented examples."""

from __future__ import annotations

import pytest
from pconf import config, records, run, strip

from tailrace.errors import ConfigError

MEM = {"Mem.total": 4050908, "Mem.used": 714984, "Mem.free": 3335924,
       "Swap.total": 1046524, "Swap.used": 0, "Swap.free": 1046524}
NEST3 = """- {name: nest, Operation: nest, Wildcard: Mem.*, Nest_under: LAYER1}
- {name: nest, Operation: nest, Wildcard: LAYER1*, Nest_under: LAYER2}
- {name: nest, Operation: nest, Wildcard: LAYER2*, Nest_under: LAYER3}
"""


def test_documented_usage_nest_and_lift() -> None:
    rec = {"Key1": "Value1", "Key2": "Value2", "OtherKey": "Value3"}
    nested = {"OtherKey": "Value3", "NestKey": {"Key1": "Value1", "Key2": "Value2"}}
    res = run("- {name: nest, operation: nest, wildcard: Key*, nest_under: NestKey}",
              records(rec))
    assert strip(res.records) == [nested]
    res = run("- {name: nest, operation: lift, nested_under: NestKey}", records(nested))
    assert strip(res.records) == [rec]


def test_documented_example_1_nest_with_remove_prefix() -> None:
    res = run("""- name: nest
  match: '*'
  operation: nest
  wildcard: Mem.*
  nest_under: Memstats
  remove_prefix: Mem.""", records(MEM))
    assert strip(res.records) == [{"Swap.total": 1046524, "Swap.used": 0, "Swap.free": 1046524,
                                   "Memstats": {"total": 4050908, "used": 714984,
                                                "free": 3335924}}]


def test_documented_example_2_nest_and_lift_undo() -> None:
    res = run("""- name: nest
  match: '*'
  Operation: nest
  Wildcard: [Mem.*, Swap.*]
  Nest_under: Stats
  Add_prefix: NESTED
- name: nest
  match: '*'
  Operation: lift
  Nested_under: Stats
  Remove_prefix: NESTED""", records(MEM))
    assert strip(res.records) == [MEM]


def test_documented_example_3_nest_three_levels_deep() -> None:
    res = run(NEST3, records(MEM))
    assert strip(res.records) == [{
        "Swap.total": 1046524, "Swap.used": 0, "Swap.free": 1046524,
        "LAYER3": {"LAYER2": {"LAYER1": {"Mem.total": 4050908, "Mem.used": 714984,
                                         "Mem.free": 3335924}}}}]


def test_documented_example_4_lift_three_times_with_prefixes() -> None:
    res = run(NEST3 + """- {name: nest, Operation: lift, Nested_under: LAYER3, Add_prefix: Lifted3_}
- {name: nest, Operation: lift, Nested_under: Lifted3_LAYER2, Add_prefix: Lifted3_Lifted2_}
- {name: nest, Operation: lift, Nested_under: Lifted3_Lifted2_LAYER1,
   Add_prefix: Lifted3_Lifted2_Lifted1_}""", records(MEM))
    assert strip(res.records) == [{
        "Swap.total": 1046524, "Swap.used": 0, "Swap.free": 1046524,
        "Lifted3_Lifted2_Lifted1_Mem.total": 4050908,
        "Lifted3_Lifted2_Lifted1_Mem.used": 714984,
        "Lifted3_Lifted2_Lifted1_Mem.free": 3335924}]


def test_lift_leaves_a_value_that_is_not_a_map_and_nest_never_moves_reserved_keys() -> None:
    res = run("- {name: nest, operation: lift, nested_under: a}", records({"a": "text"}))
    assert strip(res.records) == [{"a": "text"}]
    out = run("- {name: nest, operation: nest, wildcard: '*', nest_under: all}",
              records({"x": 1})).records[0]
    assert out == {"time": 1.0, "_id": "id-0", "_tag": "test", "all": {"x": 1}}


def test_missing_operation_keys_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs wildcard and nest_under"):
        config("pipeline:\n  filters:\n    - {name: nest, operation: nest, wildcard: a}\n")
    with pytest.raises(ConfigError, match="needs nested_under"):
        config("pipeline:\n  filters:\n    - {name: nest, operation: lift}\n")

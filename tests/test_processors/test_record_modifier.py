"""The record_modifier filter, with Fluent Bit's documented examples."""

from __future__ import annotations

import uuid

import pytest
from pconf import config, records, run, strip

from tailrace.errors import ConfigError

MEM = {"Mem.total": 1016024, "Mem.used": 716672, "Mem.free": 299352,
       "Swap.total": 2064380, "Swap.used": 32656, "Swap.free": 2031724}


def test_documented_append_fields_with_an_environment_variable() -> None:
    res = run("""- name: record_modifier
  match: '*'
  record:
    - hostname ${HOSTNAME}
    - product Awesome_Tool""", records(MEM), env={"HOSTNAME": "localhost.localdomain"})
    assert strip(res.records) == [{**MEM, "hostname": "localhost.localdomain",
                                   "product": "Awesome_Tool"}]


def test_documented_remove_key() -> None:
    res = run("""- name: record_modifier
  Remove_key: [Swap.total, Swap.used, Swap.free]""", records(MEM))
    assert strip(res.records) == [{"Mem.total": 1016024, "Mem.used": 716672,
                                   "Mem.free": 299352}]


def test_documented_allowlist_key_keeps_reserved_keys_too() -> None:
    res = run("""- name: record_modifier
  allowlist_key: [Mem.total, Mem.used, Mem.free]""", records(MEM))
    assert res.records == [{"Mem.total": 1016024, "Mem.used": 716672, "Mem.free": 299352,
                            "time": 1.0, "_id": "id-0", "_tag": "test"}]
    res = run("- {name: record_modifier, whitelist_key: Mem.used}", records(MEM))
    assert strip(res.records) == [{"Mem.used": 716672}]


def test_remove_key_and_allowlist_key_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="exclude each other"):
        config("pipeline:\n  filters:\n    - {name: record_modifier, remove_key: a, "
               "allowlist_key: b}\n")


def test_uuid_key_is_stable_for_the_same_record_id() -> None:
    a = run("- {name: record_modifier, uuid_key: uid}", records({"x": 1}, {"x": 2})).records
    b = run("- {name: record_modifier, uuid_key: uid}", records({"x": 1}, {"x": 2})).records
    assert [r["uid"] for r in a] == [r["uid"] for r in b]
    assert a[0]["uid"] != a[1]["uid"] and uuid.UUID(a[0]["uid"])

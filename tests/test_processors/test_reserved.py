"""``_id`` and ``_tag`` are the pipeline's: no filter, user code included, can change them."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubeparts import TAG, kube_chain
from pconf import batch, records, registry, run

from processors.chain import Chain
from tailrace.config import parse_config
from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult

MODULE = '''
def forge(record):
    record["_id"] = "x"
    record["_tag"] = "elsewhere"
    return record

def fresh(record):
    return {"log": record["log"], "_id": "x", "_tag": "elsewhere"}

def forge_all(records):
    for r in records:
        r["_id"] = "x"
    return records

def rebuild(records):
    return [{"log": r["log"], "_id": "x"} for r in records]

def rebuild_fewer(records):
    return [{"log": "merged"}, {"log": "merged", "_id": records[1]["_id"]}]
'''


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "forgers.py").write_text(MODULE)
    yield tmp_path
    sys.modules.pop("forgers", None)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "processor_reserved_field_kept" in r.getMessage()]


@pytest.mark.parametrize("call", ["forgers:forge", "forgers:fresh"])
def test_user_code_cannot_change_id_or_tag_and_it_is_counted_and_logged_once_per_batch(
        plugin_dir: Path, call: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    res = run(f"- {{name: python, alias: mine, call: '{call}', path: plugins}}",
              records({"log": "a"}, {"log": "b"}, {"log": "c"}),
              filename=str(plugin_dir / "pipeline.yaml"))
    assert [(r["_id"], r["_tag"]) for r in res.records] == [
        ("id-0", "test"), ("id-1", "test"), ("id-2", "test")]
    assert res.counters["reserved_kept"] == 3
    found = _warnings(caplog)
    assert len(found) == 1 and "'mine'" in found[0] and "3 record(s)" in found[0], found


@pytest.mark.parametrize("call", ["forgers:forge_all", "forgers:rebuild"])
def test_batch_mode_user_code_keeps_the_ids(plugin_dir: Path, call: str) -> None:
    res = run(f"- {{name: python, call: '{call}', batch: true, path: plugins}}",
              records({"log": "a"}, {"log": "b"}), filename=str(plugin_dir / "pipeline.yaml"))
    assert [(r["log"], r["_id"], r["_tag"]) for r in res.records] == [
        ("a", "id-0", "test"), ("b", "id-1", "test")]
    assert res.counters["reserved_kept"] == 2


def test_batch_mode_new_records_whose_line_cannot_be_told_are_dead_lettered(
        plugin_dir: Path) -> None:
    res = run("- {name: python, call: 'forgers:rebuild_fewer', batch: true, path: plugins}",
              records({"log": "a"}, {"log": "b"}, {"log": "c"}),
              filename=str(plugin_dir / "pipeline.yaml"))
    assert [(r["_id"], r["_tag"]) for r in res.records] == [("id-1", "test")]
    assert len(res.rejected) == 1 and "without the _id" in res.rejected[0][1].reason


class ForgeOptions(FilterOptions):
    pass


class ForgeFilter:
    """A third-party filter that sets ``_id`` in place, as careless code does."""

    name: ClassVar[str] = "forge"
    description: ClassVar[str] = "Overwrites _id."
    Options: ClassVar[type[ForgeOptions]] = ForgeOptions
    emits: ClassVar[bool] = False
    changes_tags: ClassVar[bool] = False

    def __init__(self, options: ForgeOptions, ctx: Any) -> None:
        pass

    def process(self, records: list[dict[str, Any]]) -> FilterResult:
        for r in records:
            r["_id"] = r.get("order", "same")
        return FilterResult(records)

    def take_emitted(self) -> list[dict[str, Any]]:
        return []


def test_a_third_party_filter_cannot_merge_two_records_into_one_id() -> None:
    reg = registry()
    reg.add("filters", [ForgeFilter])
    cfg = parse_config("pipeline: {filters: [{name: forge}]}", "p.yaml", reg)
    res = Chain(cfg).run(batch(["a", "b"]))
    ids = [r["_id"] for r in res.records]
    assert len(set(ids)) == 2 and "same" not in ids
    assert res.counters["reserved_kept"] == 2


def test_a_json_log_with_its_own_id_merged_by_kubernetes_keeps_the_record_id(
        tmp_path: Path) -> None:
    c = kube_chain(tmp_path, ", merge_log: on")
    res = c.run(batch(['{"_id": "mongo-1", "msg": "a"}', '{"_id": "mongo-1", "msg": "b"}'],
                      tag=TAG))
    assert [r["msg"] for r in res.records] == ["a", "b"]
    assert len({r["_id"] for r in res.records}) == 2
    assert all(r["_id"] != "mongo-1" and r["_tag"] == TAG for r in res.records)


def test_rewrite_tag_still_changes_tags() -> None:
    res = run("- {name: rewrite_tag, rule: '$log ^(a)$ new.$1 false'}",
              records({"log": "a"}, {"log": "b"}))
    assert sorted(r["_tag"] for r in res.records) == ["new.a", "test"]
    assert res.counters["reserved_kept"] == 0


def test_the_check_costs_little_per_record() -> None:
    """A guarded no-op filter (nest lift of a missing key) over 100k records."""
    recs = records(*({"log": "x"} for _ in range(1000)))
    chain = Chain(parse_config("pipeline: {filters: [{name: nest, operation: lift, "
                               "nested_under: nothing}]}", "p.yaml", registry()))
    assert chain._guards  # nest is checked
    start = time.perf_counter()
    for _ in range(100):
        chain.run_records(recs)
    per_record_us = (time.perf_counter() - start) / 100_000 * 1e6
    assert per_record_us < 5, per_record_us


class CopyFilter(ForgeFilter):
    """A third-party filter that returns new dicts, with ids of its own or none."""

    name: ClassVar[str] = "copier"
    per_input: ClassVar[bool] = True

    def process(self, records: list[dict[str, Any]]) -> FilterResult:
        if self.per_input:
            return FilterResult([{**r, "_id": "mine", "_tag": "t2"} for r in records])
        return FilterResult([{"log": "summary"}, {**records[0], "_tag": "t2"}])


class MergeFilter(CopyFilter):
    name: ClassVar[str] = "merger"
    per_input: ClassVar[bool] = False


def test_new_records_a_third_party_filter_returns_keep_the_ids_or_are_dead_lettered() -> None:
    reg = registry()
    reg.add("filters", [CopyFilter, MergeFilter])
    res = Chain(parse_config("pipeline: {filters: [{name: copier}]}", "p.yaml", reg)).run(
        batch(["a", "b"], tag="t1"))
    assert [(r["log"], r["_tag"]) for r in res.records] == [("a", "t1"), ("b", "t1")]
    assert len({r["_id"] for r in res.records}) == 2 and "mine" not in {
        r["_id"] for r in res.records}
    assert res.counters["reserved_kept"] == 4
    res = Chain(parse_config("pipeline: {filters: [{name: merger}]}", "p.yaml", reg)).run(
        batch(["a", "b", "c"], tag="t1"))
    assert [(r["log"], r["_tag"]) for r in res.records] == [("a", "t1")]
    assert len(res.rejected) == 1 and "without an _id of its own" in res.rejected[0][1].reason


class DupFilter(CopyFilter):
    """New dicts that all carry the first record's id: two lines, one id."""

    name: ClassVar[str] = "dup"

    def process(self, records: list[dict[str, Any]]) -> FilterResult:
        return FilterResult([{**r, "_id": records[0]["_id"]} for r in records])


def test_new_records_sharing_one_id_get_their_own_back() -> None:
    reg = registry()
    reg.add("filters", [DupFilter])
    res = Chain(parse_config("pipeline: {filters: [{name: dup}]}", "p.yaml", reg)).run(
        batch(["a", "b", "c"]))
    assert len({r["_id"] for r in res.records}) == 3 and not res.rejected
    assert res.counters["reserved_kept"] == 2

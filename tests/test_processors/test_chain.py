"""The chain: records from raw batches, tag matching, failure isolation, counters."""

from __future__ import annotations

from typing import Any, ClassVar

from pconf import batch, config, records

from processors.chain import Chain, records_from_batch
from processors.context import FilterContext
from processors.plugins import FILTERS, PARSERS
from tailrace.config import parse_config
from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult
from tailrace.plugins import Registry


class Fragile:
    """A third-party filter with a bug: it raises on any record whose log says 'bad'."""

    name: ClassVar[str] = "fragile"
    description: ClassVar[str] = "test"
    Options: ClassVar[type[FilterOptions]] = FilterOptions
    calls = 0

    def __init__(self, options: FilterOptions, ctx: FilterContext) -> None:
        pass

    def process(self, recs: list[dict[str, Any]]) -> FilterResult:
        Fragile.calls += 1
        for r in recs:
            if "bad" in r["log"]:
                raise KeyError("no such thing")
            r["ok"] = True
        return FilterResult(recs)


def fragile_chain() -> Chain:
    reg = Registry()
    reg.add_builtin("filters", FILTERS)
    reg.add("filters", [Fragile])
    reg.add_builtin("parsers", PARSERS)
    return Chain(parse_config("pipeline:\n  filters:\n    - {name: fragile, alias: frag}\n"
                              "    - {name: modify, set: {after: 1}}\n", "t.yaml", reg))


def test_records_carry_log_time_metadata_id_and_tag() -> None:
    b = batch(["one", b"tw\xffo"], meta={"host": "h1", "kubernetes.pod": "p"}, offset=100,
              streams=["stdout", "stderr"])
    b.times = [12.5, 0.0]
    recs, invalid = records_from_batch(b, "path", now=99.0)
    assert invalid == 1
    assert recs[0] == {"log": "one", "time": 12.5, "_id": recs[0]["_id"], "_tag": "web.access",
                       "host": "h1", "kubernetes": {"pod": "p"}, "path": "/var/log/x.log",
                       "stream": "stdout"}
    assert recs[1]["log"] == "tw\ufffdo" and recs[1]["time"] == 99.0
    assert recs[0]["_id"].endswith("-64") and recs[1]["_id"].endswith("-68")
    recs[0]["kubernetes"]["pod"] = "changed"
    assert recs[1]["kubernetes"] == {"pod": "p"}  # each record owns its nested maps


def test_a_filter_exception_dead_letters_only_the_failing_record() -> None:
    res = fragile_chain().run(batch(["good 1", "bad 2", "good 3"]))
    assert [r["log"] for r in res.records] == ["good 1", "good 3"]
    assert all(r["ok"] and r["after"] == 1 for r in res.records)
    [(fid, rej)] = res.rejected
    assert fid == "frag" and rej.record["log"] == "bad 2"
    assert rej.reason == "filter 'frag' raised KeyError('no such thing')"
    assert res.counters["errors"] == 1


def test_filters_apply_only_to_matching_tags_also_after_a_retag() -> None:
    cfg = config("""
pipeline:
  filters:
    - {name: rewrite_tag, match: 'app', rule: '$log ^b other false'}
    - {name: modify, match: 'app', set: {app: 1}}
    - {name: modify, match: 'oth*', set: {other: 1}}
    - {name: modify, match_regex: '^(app|other)$', set: {both: 1}}
""")
    res = Chain(cfg).run(batch(["a", "b", "c"], tag="app"))
    assert [(r["log"], r["_tag"], r.get("app"), r.get("other"), r.get("both"))
            for r in res.records] == [("a", "app", 1, None, 1), ("c", "app", 1, None, 1),
                                      ("b", "other", None, 1, 1)]


def test_counters_are_summed_per_batch_and_kept_per_filter() -> None:
    cfg = config("pipeline:\n  filters:\n    - {name: grep, alias: g, exclude: log x}\n")
    chain = Chain(cfg)
    assert chain.run(batch(["x", "y", "x"])).counters["dropped"] == 2
    assert chain.run(batch(["x"])).counters["dropped"] == 1
    assert chain.totals["g"]["dropped"] == 3


def test_run_records_accepts_mixed_tags() -> None:
    cfg = config("pipeline:\n  filters:\n    - {name: modify, match: 'a', set: {hit: 1}}\n")
    recs = records({"n": 1}, tag="a") + records({"n": 2}, tag="b")
    assert [r.get("hit") for r in Chain(cfg).run_records(recs).records] == [1, None]


def test_invalid_utf8_keeps_the_original_bytes_for_outputs_that_write_them() -> None:
    from sinks.formats import formatter

    recs, invalid = records_from_batch(batch(["fine", b"caf\xe9 \xff"]), None, now=1.0)
    assert invalid == 1
    assert "_raw" not in recs[0]
    assert recs[1]["log"] == "caf\ufffd \ufffd" and recs[1]["_raw"] == b"caf\xe9 \xff"
    assert formatter("plain")(recs) == b"fine\ncaf\xe9 \xff\n"
    json_lines = formatter("json")(recs).splitlines()
    assert b"_raw" not in json_lines[1] and "caf\ufffd".encode() in json_lines[1]


def test_lines_without_their_own_time_take_the_batch_read_time() -> None:
    b = batch(["a", "b"])
    b.time = 1700000000.25
    recs, _ = records_from_batch(b, None, now=5.0)
    assert [r["time"] for r in recs] == [1700000000.25, 1700000000.25], \
        "a redone batch must give the same records, so the time comes from the batch"
    b.times = [0.0, 7.0]
    recs, _ = records_from_batch(b, None, now=5.0)
    assert [r["time"] for r in recs] == [1700000000.25, 7.0]

"""The rewrite_tag filter: documented example, placeholders, ids, re-entry into the chain."""

from __future__ import annotations

import pytest
from pconf import batch, config, records, run, strip

from processors.chain import Chain
from tailrace.errors import ConfigError


def test_documented_example_rewrites_the_tag_and_discards_the_original() -> None:
    res = run("""- name: rewrite_tag
  match: test_tag
  rule: $tool ^(fluent)$  from.$TAG.new.$tool.$sub['s1']['s2'].out false
  emitter_name: re_emitted""", records({"tool": "fluent", "sub": {"s1": {"s2": "bit"}}},
                                       tag="test_tag"))
    assert [r["_tag"] for r in res.records] == ["from.test_tag.new.fluent.bit.out"]
    assert strip(res.records) == [{"tool": "fluent", "sub": {"s1": {"s2": "bit"}}}]
    assert res.records[0]["_id"] == "id-0"  # the only record of its line keeps its id


def test_documented_tag_composition_with_groups_tag_parts_and_environment() -> None:
    res = run(r"""- name: rewrite_tag
  match: '*'
  rule: $name ^([a-z]+)-([0-9]+)$ newtag.$TAG.$TAG[1].$1.$ss['s1']['s2'].out.${HOSTNAME} false
""", records({"name": "abc-123", "ss": {"s1": {"s2": "flb"}}}, tag="aa.bb.cc"),
              env={"HOSTNAME": "fluent"})
    assert res.records[0]["_tag"] == "newtag.aa.bb.cc.bb.abc.flb.out.fluent"


def test_keep_true_emits_a_copy_with_a_distinct_deterministic_id() -> None:
    yaml = "- {name: rewrite_tag, alias: route, rule: '$level ^error$ alerts true'}"
    recs = records({"level": "error", "k": {"n": 1}}, {"level": "info"})
    first = run(yaml, recs).records
    again = run(yaml, records({"level": "error", "k": {"n": 1}}, {"level": "info"})).records
    assert [(r["_id"], r["_tag"]) for r in first] == [
        ("id-0", "test"), ("id-1", "test"), (first[2]["_id"], "alerts")]
    assert first[2]["_id"].startswith("id-0-") and first[2]["_id"] == again[2]["_id"]
    first[2]["k"]["n"] = 99
    assert first[0]["k"] == {"n": 1}  # the copy owns its nested maps


def test_rules_are_tried_in_order_and_non_text_values_never_match() -> None:
    res = run("""- name: rewrite_tag
  rule:
    - $code ^5 server false
    - $code ^4 client false
    - $code . other false""", records({"code": "404"}, {"code": "503"}, {"code": 200}))
    # re-emitted records follow the records that stayed
    assert [r["_tag"] for r in res.records] == ["test", "client", "server"]


def test_emitted_records_restart_the_chain_but_skip_their_emitter() -> None:
    cfg = config(r"""
pipeline:
  filters:
    - {name: modify, match: 'alerts', set: {seen_by_first: yes}}
    - {name: rewrite_tag, match: 'web', rule: '$log ^ERR alerts true'}
    - {name: modify, match: 'alerts', set: {alert: yes}}
    - {name: rewrite_tag, match: 'alerts', rule: '$log ^ERR web.again false'}
""")
    res = Chain(cfg).run(batch(["ERR disk", "ok"], tag="web"))
    tags = [r["_tag"] for r in res.records]
    assert tags == ["web", "web", "web.again"]
    copy = res.records[2]
    assert copy["seen_by_first"] is True and copy["alert"] is True


def test_two_filters_bouncing_a_record_stop_at_the_emit_depth() -> None:
    res = run("""- {name: rewrite_tag, match: a, rule: '$x . b false'}
- {name: rewrite_tag, match: b, rule: '$x . a false'}""", records({"x": "1"}, tag="a"))
    assert len(res.records) == 1
    assert res.counters["emit_depth_exceeded"] == 1


@pytest.mark.parametrize("rule, msg", [
    ("'log ^a$ t true'", "must start with '\\$'"),
    ("'$log ^a$ t maybe'", "KEEP true or false"),
    ("'$log (bad t true'", "invalid regex"),
])
def test_invalid_rules_are_config_errors(rule: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        config(f"pipeline:\n  filters:\n    - {{name: rewrite_tag, rule: {rule}}}\n")

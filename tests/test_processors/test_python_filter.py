"""The python filter: an operator's function by import path, failures dead-lettered."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pconf import config, records, run

from tailrace.errors import ConfigError

MODULE = '''
def enrich(record, suffix="!"):
    if record.get("drop"):
        return None
    if record.get("boom"):
        raise ValueError("cannot handle " + record["log"])
    if record.get("split"):
        return [{"log": part} for part in record["log"].split(",")]
    if record.get("bad"):
        return 42
    record["log"] = record["log"] + suffix
    return record

def only_even(records):
    return [r for i, r in enumerate(records) if i % 2 == 0]
'''


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "opsfilters.py").write_text(MODULE)
    yield tmp_path
    sys.modules.pop("opsfilters", None)


def test_the_function_changes_drops_and_splits_records(plugin_dir: Path) -> None:
    res = run("- {name: python, call: 'opsfilters:enrich', path: plugins, args: {suffix: '?'}}",
              records({"log": "a"}, {"log": "b", "drop": True}, {"log": "x,y", "split": True}),
              filename=str(plugin_dir / "pipeline.yaml"))
    assert [r["log"] for r in res.records] == ["a?", "x", "y"]
    assert [r["_id"] for r in res.records] == ["id-0", "id-2", "id-2-1"]
    assert all(r["_tag"] == "test" for r in res.records)


def test_an_exception_on_one_record_dead_letters_it_and_the_rest_goes_on(
        plugin_dir: Path) -> None:
    res = run("- {name: python, alias: mine, call: opsfilters.enrich, path: plugins}",
              records({"log": "a"}, {"log": "b", "boom": True}, {"log": "c", "bad": True},
                      {"log": "d"}),
              filename=str(plugin_dir / "pipeline.yaml"))
    assert [r["log"] for r in res.records] == ["a!", "d!"]
    reasons = [(fid, rej.record["log"], rej.reason) for fid, rej in res.rejected]
    assert reasons[0][:2] == ("mine", "b") and "ValueError('cannot handle b')" in reasons[0][2]
    assert reasons[1][:2] == ("mine", "c") and "returned int" in reasons[1][2]
    assert res.counters["errors"] == 2


def test_batch_mode_gets_the_whole_list(plugin_dir: Path) -> None:
    res = run("- {name: python, call: 'opsfilters:only_even', path: plugins, batch: true}",
              records({"n": 0}, {"n": 1}, {"n": 2}), filename=str(plugin_dir / "p.yaml"))
    assert [r["n"] for r in res.records] == [0, 2]


def test_an_import_error_is_a_config_error_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config("pipeline:\n  filters:\n    - name: python\n      call: nosuchmod:fn\n",
               filename=str(tmp_path / "p.yaml"))
    assert f"{tmp_path / 'p.yaml'}:4:" in str(err.value)
    assert "cannot import module 'nosuchmod'" in str(err.value)
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        config("pipeline:\n  filters:\n    - {name: python, call: 'json:nope'}\n")

"""The tail input's options: defaults, shorthands, and config errors with FILE:LINE."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_test_config

from edge_agent.options import MultilineOptions, Selector, TailOptions, fluent_regex
from tailrace.errors import ConfigError


def config(input_yaml: str) -> str:
    return ("service: {partitions: 2}\n"
            "pipeline:\n"
            "  inputs:\n"
            f"{input_yaml}"
            "  outputs:\n"
            "    - {name: stdout}\n")


def test_defaults_and_shorthands() -> None:
    o = TailOptions.model_validate({"name": "tail", "path": "a/*.log, b/*.log",
                                    "namespaces": ["prod-*"], "multiline": "java",
                                    "max_line_bytes": "64KiB"})
    assert o.path == ["a/*.log", "b/*.log"]
    assert o.namespaces == Selector(include=["prod-*"])
    assert o.multiline == MultilineOptions(preset="java")
    assert o.max_line_bytes == 65536
    assert o.format == "plain" and o.long_lines == "split" and o.path_key == "path"


def test_fluent_bit_named_groups_are_accepted() -> None:
    assert fluent_regex(r"(?<ns>[a-z]+)(?<=x)(?<!y)") == r"(?P<ns>[a-z]+)(?<=x)(?<!y)"


@pytest.mark.parametrize(("yaml", "line", "needle"), [
    ("    - {name: tail}\n", 4, "set `path` (globs) or `path_regex`"),
    ("    - {name: tail, path: x, path_regex: '(unclosed'}\n", 4,
     "path_regex is not a valid regular expression"),
    ("    - {name: tail, path: x, tag: 'a.<team>'}\n", 4, "uses <team>"),
    ("    - name: tail\n      path: x\n      multiline: {start: a, preset: java}\n", 6,
     "exactly one of multiline.start"),
    ("    - name: tail\n      path: x\n      long_lines: wrap\n", 6, "long_lines"),
])
def test_config_errors_name_file_line_and_key(yaml: str, line: int, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_test_config(config(yaml))
    text = str(err.value)
    assert f"test.yaml:{line}:" in text and needle in text, text


def test_tag_may_use_path_regex_groups_and_kubernetes_fields() -> None:
    cfg = load_test_config(config(
        "    - {name: tail, path_regex: '/(?<team>\\w+)/x.log', tag: 'a.<team>.<pod>'}\n"))
    assert cfg.inputs[0].options.tag == "a.<team>.<pod>"


def _default_cell(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Selector):
        return "`{include: ['*'], exclude: []}`"
    return f"`{value}`" if not isinstance(value, list) else f"`{value!r}`"


def test_every_option_is_documented_with_its_default() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in doc.splitlines()
            if line.startswith("| `")}
    fields = [(k, f) for k, f in TailOptions.model_fields.items() if k != "name"]
    fields += [(f"multiline.{k}", f) for k, f in MultilineOptions.model_fields.items()]
    for key, field in fields:
        row = rows.get(f"`{key}`")
        assert row is not None, f"docs/agent.md does not list `{key}`"
        default = field.default_factory() if field.default_factory else field.default
        cell = row.split("|")[2].strip()
        assert cell.startswith(_default_cell(default)), f"`{key}`: doc says {cell!r}"

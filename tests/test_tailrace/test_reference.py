"""The configuration reference and JSON Schema: generated from the option tables, never drifting.

``docs/configuration.md`` must equal ``tailrace config reference --builtin-only``; the JSON
Schema must accept every config the loader accepts (it may be looser, never stricter) and
reject what it can see is wrong.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from pydantic import AliasChoices, Field, SecretStr

from tailrace.cli.configschema import SIZE_PATTERN, accepted_keys, config_schema
from tailrace.cli.demo import DEMO_CONFIG
from tailrace.cli.main import cli
from tailrace.cli.reference import reference_markdown
from tailrace.cli.registry import build_registry
from tailrace.config import parse_config
from tailrace.errors import ConfigError
from tailrace.options import ByteSize, Options, OutputOptions, parse_byte_size
from tailrace.plugins import Registry
from tailrace.serviceconfig import ServiceConfig

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"
REGENERATE = ".venv/bin/tailrace config reference --builtin-only -o docs/configuration.md"


# -- a plugin with one option of every shape ------------------------------------------------


class _Window(Options):
    """How much to keep at once."""

    size: ByteSize = Field(1024, description="Bytes kept.")


class _DemoOptions(OutputOptions):
    url: str = Field(description="Where to send.")
    mode: Literal["fast", "safe"] = Field("safe", description="Which trade-off.")
    limit: ByteSize = Field(2 * 1024 * 1024, ge=1024, description="Cap per request.")
    ratio: float = Field(0.5, gt=0, le=1, description="Share sampled.")
    tags: list[str] = Field(default_factory=list, description="Extra tags.")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP | headers.")
    token: SecretStr | None = Field(None, description="Bearer token.")
    window: _Window = Field(default_factory=_Window, description="Buffering window.")
    key_name: str = Field("log", validation_alias=AliasChoices("key_name", "key"),
                          description="Field to send.")
    copy_: list[str] = Field(default_factory=list, alias="copy", description="Keys to copy.")


class _DemoOutput:
    name: ClassVar[str] = "demo"
    description: ClassVar[str] = "Send records somewhere (a test plugin)."
    Options: ClassVar[type[_DemoOptions]] = _DemoOptions
    single_writer: ClassVar[bool] = False


@pytest.fixture(scope="module")
def demo_registry() -> Registry:
    reg = Registry()
    reg.add("outputs", [_DemoOutput])
    return reg


def rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """The first table under ``heading``: first cell -> the other cells."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    table: dict[str, list[str]] = {}
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            table[cells[0]] = cells[1:]
        elif table and not line.startswith("|"):
            break
    return table


# -- the committed reference ------------------------------------------------------------


def test_committed_reference_equals_the_generated_one() -> None:
    expected = reference_markdown(build_registry(entry_points=False))
    actual = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    if actual != expected:
        diff = list(difflib.unified_diff(actual.splitlines(), expected.splitlines(),
                                         "docs/configuration.md", "generated", lineterm="", n=0))
        shown = "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else "")
        pytest.fail(f"docs/configuration.md is out of date with the option tables; "
                    f"regenerate it with:\n  {REGENERATE}\n{shown}", pytrace=False)


def test_reference_has_a_row_for_every_option_of_every_plugin() -> None:
    registry = build_registry(entry_points=False)
    text = reference_markdown(registry)
    service = rows(text, "## service")
    assert {k.strip("`") for k in service} == set(ServiceConfig.model_fields)
    for attr in ("inputs", "filters", "outputs", "parsers"):
        for name, cls in getattr(registry, attr).items():
            table = rows(text, f"### {name} {attr[:-1]}")
            documented = {k.strip("`") for cell in table for k in cell.split(", ")}
            for key, field in cls.Options.model_fields.items():
                shown = [k for k in accepted_keys(cls.Options, key, field)
                         if not k.endswith("_")]
                assert set(shown) & documented, f"{attr} {name}: option {key} is not documented"


def test_reference_renders_types_defaults_bounds_and_nested_tables(
        demo_registry: Registry) -> None:
    text = reference_markdown(demo_registry)
    table = rows(text, "### demo output")
    assert table["`name`"] == ["`demo`", "**required**", "Selects this plugin."]
    assert table["`url`"] == ["string", "**required**", "Where to send."]
    assert table["`mode`"] == ["one of `fast`, `safe`", "`safe`", "Which trade-off."]
    assert table["`limit`"] == ["size, ≥ 1024", "`2097152` (2MiB)", "Cap per request."]
    assert table["`ratio`"] == ["number, > 0, ≤ 1", "`0.5`", "Share sampled."]
    assert table["`tags`"] == ["list of string", "`[]`", "Extra tags."]
    assert table["`headers`"] == ["map of string to string", "`{}`", "HTTP \\| headers."]
    assert table["`token`"] == ["string (secret)", "unset", "Bearer token."]
    assert table["`key_name`, `key`"][0] == "string"
    assert "`copy`" in table and not any("copy_" in k for k in table)
    assert table["`window`"][:2] == ["mapping", "see below"]
    assert "(#demowindow)" in table["`window`"][2]
    window = rows(text, "#### `demo.window`")
    assert window["`size`"] == ["size, ≥ 0", "`1024` (1KiB)", "Bytes kept."]
    assert "[demo](#demo-output)" in text


# -- the JSON Schema ----------------------------------------------------------------------

SCHEMA_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("all shapes", {"url": "http://x", "key": "msg", "copy": ["a"], "limit": "4MiB",
                    "window": {"size": "1k"}, "token": "t", "ratio": 1}, True),
    ("python name of an aliased key", {"url": "u", "key_name": "msg"}, True),
    ("env reference for a number", {"url": "u", "ratio": "${RATIO:-0.25}"}, True),
    ("env reference for a choice", {"url": "u", "mode": "${MODE:-fast}"}, True),
    ("missing required key", {"mode": "fast"}, False),
    ("value not among the choices", {"url": "u", "mode": "reckless"}, False),
    ("number out of range", {"url": "u", "ratio": 0}, False),
    ("size below its minimum", {"url": "u", "limit": 10}, False),
    ("size that is no size", {"url": "u", "limit": "lots"}, False),
    ("unknown key", {"url": "u", "bogus": 1}, False),
    ("unknown key in a nested table", {"url": "u", "window": {"bytes": 1}}, False),
]


@pytest.mark.parametrize(("case", "entry", "valid"), SCHEMA_CASES,
                         ids=[c[0] for c in SCHEMA_CASES])
def test_schema_and_loader_agree(demo_registry: Registry, case: str, entry: dict[str, Any],
                                 valid: bool) -> None:
    doc = {"pipeline": {"outputs": [{"name": "demo", **entry}]}}
    schema_errors = list(Draft202012Validator(config_schema(demo_registry)).iter_errors(doc))
    try:
        parse_config(yaml.safe_dump(doc), "case.yaml", demo_registry, env={})
        loader_ok = True
    except ConfigError:
        loader_ok = False
    assert loader_ok is valid, f"{case}: the loader {'rejects' if valid else 'accepts'} it"
    assert (not schema_errors) is valid, f"{case}: schema says {schema_errors}"


def test_schema_rejects_an_unknown_plugin_and_top_level_key() -> None:
    schema = Draft202012Validator(config_schema(build_registry(entry_points=False)))
    assert list(schema.iter_errors({"pipeline": {"inputs": [{"name": "nope"}]}}))
    assert list(schema.iter_errors({"servcie": {}}))
    assert list(schema.iter_errors({"parsers": [{"name": "x", "format": "regex"}]}))


def _configs_in_the_repo() -> list[tuple[str, str]]:
    found = [("compose/tailrace.yaml", (ROOT / "compose" / "tailrace.yaml").read_text()),
             ("tailrace demo", DEMO_CONFIG.format(dir="/tmp/demo"))]
    configmap = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())
    found.append(("deploy/kubernetes/configmap.yaml", configmap["data"]["tailrace.yaml"]))
    migration = (ROOT / "docs" / "migration-fluent-bit.md").read_text()
    for i, block in enumerate(re.findall(r"```yaml tailrace\n(.*?)```", migration, re.S)):
        found.append((f"docs/migration-fluent-bit.md #{i}", block))
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        found.append((str(path.relative_to(ROOT)), path.read_text()))
    return found


@pytest.mark.parametrize(("name", "text"), _configs_in_the_repo(),
                         ids=[n for n, _ in _configs_in_the_repo()])
def test_every_config_in_the_repository_is_valid_for_loader_and_schema(name: str, text: str
                                                                      ) -> None:
    registry = build_registry(entry_points=False)
    parse_config(text, name, registry, env={})
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in
              Draft202012Validator(config_schema(registry)).iter_errors(yaml.safe_load(text))]
    assert not errors, "\n".join(errors)


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(config_schema(build_registry(entry_points=False)))


@pytest.mark.parametrize("text", ["65536", "64KiB", "64kib", "1MiB", "10MB", "1g", "32k",
                                  " 2 GB ", "1.5M", "0"])
def test_size_pattern_accepts_what_the_loader_parses(text: str) -> None:
    assert isinstance(parse_byte_size(text), int)
    assert re.search(SIZE_PATTERN, text)


@pytest.mark.parametrize("text", ["lots", "1 MiBs", "-1k", "k", "1e6", "1 PiB"])
def test_size_pattern_rejects_what_the_loader_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_byte_size(text)
    assert not re.search(SIZE_PATTERN, text)


# -- the commands -------------------------------------------------------------------------


def test_config_reference_command_writes_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    result = CliRunner().invoke(cli, ["config", "reference", "--builtin-only", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == reference_markdown(build_registry(entry_points=False))


def test_config_schema_command_prints_the_schema() -> None:
    result = CliRunner().invoke(cli, ["config", "schema", "--builtin-only"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == config_schema(build_registry(entry_points=False))

"""Plugin contracts: declared bases with no-op hooks, structural plugins adopted, typed kinds."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
import pytest
from pydantic import BaseModel

from edge_agent.tail import file_input
from tailrace.cli.registry import build_registry
from tailrace.config import parse_config
from tailrace.lifecycle import STATES, Lifecycle, State
from tailrace.options import FilterOptions, InputOptions, OutputOptions
from tailrace.outcome import Delivered, FilterResult, Outcome
from tailrace.plugins import (
    OUTPUT_RETRY_BASE_S,
    FilterPlugin,
    InputPlugin,
    OutputPlugin,
    ParserPlugin,
    Registry,
)


class _ShapedOutput:
    """An output written before the bases existed: only what it needs, no hooks."""

    name: ClassVar[str] = "shaped"
    description: ClassVar[str] = "A third-party output with the right shape."
    Options: ClassVar[type[OutputOptions]] = OutputOptions

    def __init__(self, options: OutputOptions, ctx: object) -> None:
        self.written: list[dict[str, Any]] = []

    def write_batch(self, records: list[dict[str, Any]]) -> Outcome:
        self.written.extend(records)
        return Delivered()


class _HookedOutput(_ShapedOutput):
    name: ClassVar[str] = "hooked"
    recovered: list[list[Mapping[bytes, bytes]]]

    def recover(self, checkpoints: list[Mapping[bytes, bytes]]) -> None:
        self.recovered = [checkpoints]

    def checkpoint(self) -> dict[str, str | int] | None:
        return {"n": len(self.written)}


def test_builtin_plugins_subclass_their_kinds_contract() -> None:
    reg = build_registry(entry_points=False)
    for kind, base in (("inputs", InputPlugin), ("filters", FilterPlugin),
                       ("parsers", ParserPlugin), ("outputs", OutputPlugin)):
        for name, cls in reg.table(kind).items():
            assert issubclass(cls, base), f"{name}: {cls.__name__} is not a {base.__name__}"


def test_a_structural_output_is_adopted_with_no_op_hooks() -> None:
    reg = Registry()
    reg.add("outputs", [_ShapedOutput])
    cls = reg.outputs["shaped"]
    assert issubclass(cls, OutputPlugin) and issubclass(cls, _ShapedOutput)
    assert cls.__name__ == "_ShapedOutput" and cls.__module__ == __name__
    out = cls(OutputOptions(name="shaped"), object())
    # The sink worker calls every hook directly: the adopted class has them all.
    out.recover([{b"k": b"v"}])
    assert out.checkpoint() is None
    out.committed()
    assert out.backoff().base_s == OUTPUT_RETRY_BASE_S
    assert dict(out.stats) == {} and out.single_writer is False
    assert isinstance(out.write_batch([{"log": "x"}]), Delivered)
    out.close()


def test_an_adopted_plugins_own_hooks_win_over_the_defaults() -> None:
    reg = Registry()
    reg.add("outputs", [_HookedOutput])
    out = reg.outputs["hooked"](OutputOptions(name="hooked"), object())
    out.write_batch([{"log": "a"}, {"log": "b"}])
    out.recover([])
    assert out.checkpoint() == {"n": 2}


def test_registering_the_same_class_twice_is_one_plugin_and_two_names_clash() -> None:
    reg = Registry()
    reg.add("outputs", [_ShapedOutput])
    first = reg.outputs["shaped"]
    reg.add("outputs", [_ShapedOutput])
    assert reg.outputs["shaped"] is first

    class Other(_ShapedOutput):
        pass

    with pytest.raises(TypeError, match="two outputs plugins are named 'shaped'"):
        reg.add("outputs", [Other])


def test_a_plugin_whose_options_do_not_extend_its_kinds_base_is_refused() -> None:
    class Loose(BaseModel):
        name: str

    class BadFilter:
        name: ClassVar[str] = "bad"
        description: ClassVar[str] = "Options from the wrong base."
        Options: ClassVar[type[BaseModel]] = Loose

        def process(self, records: list[dict[str, Any]]) -> FilterResult:
            return FilterResult(records)

    with pytest.raises(TypeError, match="Options must extend tailrace.options.FilterOptions"):
        Registry().add("filters", [BadFilter])


def test_an_adopted_plugin_without_its_required_method_cannot_be_built() -> None:
    class NoProcess:
        name: ClassVar[str] = "noprocess"
        description: ClassVar[str] = "Forgot process()."
        Options: ClassVar[type[FilterOptions]] = FilterOptions

    reg = Registry()
    reg.add("filters", [NoProcess])
    with pytest.raises(TypeError, match="abstract method"):
        reg.filters["noprocess"](FilterOptions(name="noprocess"), object())


def test_options_cross_checks_are_called_for_every_configured_plugin() -> None:
    class CheckedOptions(FilterOptions):
        def check_config(self, config: Any) -> list[tuple[tuple[str | int, ...], str]]:
            return [(("match",), f"checked against {len(config.filters)} filters")]

    class Checked(FilterPlugin):
        name: ClassVar[str] = "checked"
        description: ClassVar[str] = "Cross-checks its options."
        Options: ClassVar[type[FilterOptions]] = CheckedOptions

        def process(self, records: list[dict[str, Any]]) -> FilterResult:
            return FilterResult(records)

    reg = Registry()
    reg.add("filters", [Checked])
    with pytest.raises(Exception, match=r"pipeline\.filters\[0\]\.match: checked against 1"):
        parse_config("pipeline:\n  filters:\n    - {name: checked}\n", "p.yaml", reg)


def test_the_agent_refuses_an_input_plugin_that_is_not_a_file_input() -> None:
    class Socket:
        name: ClassVar[str] = "socket"
        description: ClassVar[str] = "Not files."
        Options: ClassVar[type[InputOptions]] = InputOptions

        def __init__(self, options: InputOptions, **context: object) -> None:
            pass

    reg = Registry()
    reg.add("inputs", [Socket])
    plugin = reg.inputs["socket"](InputOptions(name="socket"))
    with pytest.raises(TypeError, match="not a file input.*TailInput"):
        file_input(plugin)


def test_lifecycle_states_are_an_enum_that_publishes_the_same_strings() -> None:
    assert [s.value for s in STATES] == ["starting", "active", "idle", "throttled",
                                         "broker_down", "draining", "stopped", "failed"]
    life = Lifecycle("sink", "w1")
    rec = life.thread("sink:out")
    rec.set_state(State.THROTTLED, "retrying")
    assert life.state is State.THROTTLED and life.state == "throttled"
    doc = json.loads(orjson.dumps(life.snapshot()))  # what Publisher writes to Redis
    assert doc["state"] == "throttled" and doc["threads"][0]["state"] == "throttled"
    with pytest.raises(ValueError):
        rec.set_state("napping")  # type: ignore[arg-type]


_LAZY_CHECK = """
import sys
from tailrace.cli.registry import build_registry
from tailrace.config import parse_config
reg = build_registry(entry_points=False)
names = sorted(reg.filters), sorted(reg.outputs), "kubernetes" in reg.filters, len(reg.outputs)
parse_config('''pipeline:
  inputs: [{name: tail, path: /tmp/x.log}]
  filters: [{name: parser, match: '*', key: log, parser: nginx}]
  outputs: [{name: file, match: '*', path: /tmp/out.log}]
''', "t.yaml", reg)
print(sorted(m for m in sys.modules
             if m.startswith(("processors.filters.", "sinks.es", "sinks.stdout", "sinks.file"))))
"""


def test_a_config_load_imports_only_the_builtin_plugins_it_names() -> None:
    import subprocess
    import sys

    from helpers import ROOT

    out = subprocess.run([sys.executable, "-c", _LAZY_CHECK], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    # Not grep, kubernetes, the es output, ...: listing names and `in` import nothing.
    assert out.split() == ["['processors.filters.parser',", "'sinks.file']"], out


def test_a_builtin_is_imported_at_its_first_lookup_and_must_declare_its_listed_name() -> None:
    reg = Registry()
    reg.add_builtin("outputs", {"stdout": "sinks.stdout:StdoutOutput",
                                "nope": "sinks.stdout:StdoutOutput"})
    assert list(reg.outputs) == ["stdout", "nope"] and len(reg.outputs) == 2
    cls = reg.outputs["stdout"]
    assert cls.name == "stdout" and reg.outputs.get("stdout") is cls
    with pytest.raises(TypeError, match="listed as 'nope' but declares name 'stdout'"):
        reg.outputs["nope"]
    with pytest.raises(KeyError):
        reg.outputs["missing"]


def test_a_plugin_named_like_a_builtin_is_refused_unless_it_is_that_builtin() -> None:
    from sinks.stdout import StdoutOutput

    reg = Registry()
    reg.add_builtin("outputs", {"stdout": "sinks.stdout:StdoutOutput"})
    reg.add("outputs", [StdoutOutput])  # the same class again (an entry point to it): fine
    assert reg.outputs["stdout"] is StdoutOutput

    class Stdout(_ShapedOutput):
        name: ClassVar[str] = "stdout"

    with pytest.raises(TypeError, match="two outputs plugins are named 'stdout'"):
        reg.add("outputs", [Stdout])
    reg.add_builtin("filters", {"grep": "a:B"})
    with pytest.raises(TypeError, match="two filters plugins are named 'grep'"):
        reg.add_builtin("filters", {"grep": "a:B"})

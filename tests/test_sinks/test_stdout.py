"""The stdout output prints records for trying a pipeline out."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sinkdata import make_records

from sinks.context import OutputContext
from sinks.stdout import StdoutOutput, StdoutOutputOptions
from tailrace.outcome import Delivered


def test_records_are_printed_as_json_lines(capfd: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    out = StdoutOutput(StdoutOutputOptions(name="stdout"), OutputContext("s", tmp_path, Path))
    assert isinstance(out.write_batch(make_records(2)), Delivered)
    out.close()
    lines = capfd.readouterr().out.splitlines()
    assert [orjson.loads(x)["_id"] for x in lines] == ["r0000000", "r0000001"]


def test_a_template_prints_the_chosen_fields(capfd: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    opts = StdoutOutputOptions(name="stdout", format="template", template="{_tag}: {path}")
    out = StdoutOutput(opts, OutputContext("s", tmp_path, Path))
    out.write_batch(make_records(1))
    assert capfd.readouterr().out == "web.app: /item/0\n"

"""docs/outputs.md keeps the generated option tables of the outputs, word for word."""

from __future__ import annotations

import re
from pathlib import Path

from tailrace.cli.reference import reference_markdown
from tailrace.cli.registry import build_registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "outputs.md"


def test_the_output_option_tables_equal_the_generated_ones() -> None:
    ref = reference_markdown(build_registry(entry_points=False))
    start = ref.index("### es output")
    generated = ref[start : ref.index("\n## ", start)].strip()
    text = DOC.read_text()
    documented = text.split("<!-- options:begin -->")[1].split("<!-- options:end -->")[0]
    assert documented.strip() == generated, (
        "docs/outputs.md is out of date: replace the part between the options markers with "
        "the outputs section of `tailrace config reference`")


def test_every_output_option_is_explained_in_the_prose() -> None:
    prose = DOC.read_text().split("## Option reference")[0]
    for cls in build_registry(entry_points=False).outputs.values():
        for name in cls.Options.model_fields:
            if name in ("name", "match", "match_regex", "alias"):
                continue
            assert re.search(f"`{name}[`:/ ]", prose), (
                f"{cls.name}.{name} is not explained in docs/outputs.md")

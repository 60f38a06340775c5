"""`config check` reports every problem at once, in file order, each said once."""

from __future__ import annotations

import pytest
from helpers import load_test_config

from tailrace.errors import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_test_config(text, "p.yaml")
    return [str(p) for p in info.value.problems]


ES = "pipeline:\n  outputs:\n    - {{name: es, {opts}}}\n"


def test_a_field_error_does_not_hide_the_entrys_cross_field_error() -> None:
    found = problems(ES.format(opts="http_user: a, http_passwd: pw, api_key: k, workers: 0"))
    assert "p.yaml:3:7: pipeline.outputs[0]: set either api_key or http_user/http_passwd, " \
           "not both" in found, found
    assert any("pipeline.outputs[0].workers: input should be greater than or equal to 1"
               in p for p in found), found
    assert len(found) == 2


def test_a_cross_field_check_about_a_bad_key_is_not_judged_on_its_default() -> None:
    found = problems(ES.format(opts="retry_backoff_ms: 0, retry_backoff_max_ms: 100"))
    assert len(found) == 1 and "retry_backoff_ms: input should be greater" in found[0], found


PARSER = """\
pipeline:
  inputs: [{{name: tail, path: x}}]
parsers:
  - {{name: p1, format: regex, regex: '^(?<t>.*)$', time_key: t, {opts}}}
"""


@pytest.mark.parametrize(("opts", "key", "says"), [
    ("time_format: '%Q'", "time_format", "unsupported directive %Q"),
    ("time_format: '%Y %L %L'", "time_format", "two fraction directives"),
    ("time_format: '%Y', time_offset: 'two hours'", "time_offset",
     "expected a zone offset like +0200"),
])
def test_a_time_format_the_parser_cannot_compile_is_a_config_error_at_its_line(
        opts: str, key: str, says: str) -> None:
    found = problems(PARSER.format(opts=opts))
    assert len(found) == 1 and found[0].startswith("p.yaml:4:") \
        and f"parsers[0].{key}: " in found[0] and says in found[0], found


@pytest.mark.parametrize("fmt", ["%d/%b/%Y:%H:%M:%S %z", "%Y-%m-%dT%H:%M:%S.%L%z", "%s.%L",
                                 "%b %d %H:%M:%S"])
def test_supported_time_formats_pass(fmt: str) -> None:
    load_test_config(PARSER.format(opts=f"time_format: '{fmt}'"), "p.yaml")


def test_problems_come_in_file_order() -> None:
    text = """\
parsers:
  - {name: p1, format: regex, regex: '^(?<t>.*)$', time_key: t, time_format: '%Q'}
pipeline:
  inputs: [{name: tail, path: x}]
  filters:
    - {name: rewrite_tag, rule: '$a b'}
  outputs:
    - {name: es, http_user: a, api_key: k, workers: 0}
service: {partitions: 0}
"""
    found = problems(text)
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines) and lines[0] == 2 and lines[-1] == 9, found


def test_the_rewrite_tag_rule_error_quotes_the_rule_once() -> None:
    found = problems("pipeline:\n  filters:\n    - {name: rewrite_tag, rule: '$a b'}\n")
    assert len(found) == 1 and found[0].count("'$a b'") == 1, found
    assert "value error" not in found[0].lower(), found

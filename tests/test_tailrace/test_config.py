"""Config validation: every problem reported together as FILE:LINE:COL: key: message."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import load_test_config

from tailrace.cli import cli
from tailrace.errors import ConfigError

GOOD = """\
service:
  partitions: 4
pipeline:
  inputs:
    - name: tail
      tag: 'kube.*'
      path: /var/log/containers/*.log
  filters:
    - {name: parser, match: 'kube.*', key: log, parser: nginx}
  outputs:
    - {name: file, match: '*', path: './out/{tag}.log'}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_test_config(text, "p.yaml")
    return [str(p) for p in info.value.problems]


def test_valid_config_resolves_defaults_and_output_ids() -> None:
    cfg = load_test_config(GOOD)
    assert cfg.service.partitions == 4
    assert cfg.service.data_dir == "./.tailrace"
    assert [o.id for o in cfg.outputs] == ["file.0"]
    assert cfg.inputs[0].options.path == ["/var/log/containers/*.log"]


def test_wrong_type_names_file_line_column_key_and_found_value() -> None:
    text = GOOD.replace("partitions: 4", "partitions: many")
    assert problems(text) == [
        "p.yaml:2:15: service.partitions: input should be a valid integer, unable to parse "
        "string as an integer, got 'many'"
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = (GOOD.replace("partitions: 4", "partitions: 0")
            .replace("parser: nginx", "parser: nope")
            .replace("path: './out/{tag}.log'", "pth: x"))
    found = problems(text)
    assert len(found) == 4, found
    assert found[0].startswith("p.yaml:2:15: service.partitions: input should be greater "
                               "than or equal to 1, got 0")
    # In file order: the filter's unknown parser (line 9) before the output (line 11).
    # (the lists of known keys and parsers grow with the plugins: check the stable part)
    assert found[1].startswith("p.yaml:9:57: pipeline.filters[0].parser: unknown parser 'nope';"
                               " define it under parsers: or use a stock one (apache, ")
    assert found[2] == "p.yaml:11:7: pipeline.outputs[0].path: required key 'path' is missing"
    assert found[3].startswith("p.yaml:11:32: pipeline.outputs[0].pth: unknown key 'pth'; "
                               "expected one of: alias, ")


def test_unknown_plugin_lists_the_known_ones() -> None:
    found = problems(GOOD.replace("name: tail", "name: tial"))
    assert found == ["p.yaml:5:13: pipeline.inputs[0].name: unknown input plugin 'tial'; "
                     "known: tail"]


def test_unknown_parser_reference_is_an_error_at_the_filter() -> None:
    found = problems(GOOD.replace("parser: nginx", "parser: nope"))
    assert len(found) == 1
    assert found[0].startswith("p.yaml:9:57: pipeline.filters[0].parser: unknown parser 'nope'")


def test_unknown_top_level_key_is_an_error() -> None:
    assert problems(GOOD + "extra: 1\n") == [
        "p.yaml:12:1: extra: unknown key 'extra'; expected one of: service, pipeline, parsers"
    ]


def test_invalid_yaml_reports_the_position() -> None:
    found = problems("service:\n  partitions: [1, 2\n")
    assert len(found) == 1 and found[0].startswith("p.yaml:3:1: invalid YAML")


def test_env_vars_expand_and_missing_ones_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TR_PARTS", "16")
    cfg = load_test_config(GOOD.replace("partitions: 4", "partitions: ${TR_PARTS}"))
    assert cfg.service.partitions == 16
    cfg = load_test_config(GOOD.replace("partitions: 4", "partitions: ${TR_NONE:-3}"))
    assert cfg.service.partitions == 3
    found = problems(GOOD.replace("partitions: 4", "partitions: ${TR_UNSET_VAR}"))
    assert found[0].startswith("p.yaml:2:15: service.partitions: environment variable "
                               "TR_UNSET_VAR is not set")


def test_duplicate_output_names_are_rejected() -> None:
    text = GOOD + "    - {name: file, alias: file.0, path: x}\n"
    assert any("output name 'file.0' is used twice" in p for p in problems(text))


def test_byte_sizes_accept_units() -> None:
    cfg = load_test_config(GOOD.replace("path: /var/log/containers/*.log",
                                        "path: /x/*.log\n      batch_bytes: 2MiB"))
    assert cfg.inputs[0].options.batch_bytes == 2 * 1024 * 1024
    found = problems(GOOD.replace("path: /var/log/containers/*.log",
                                  "path: /x/*.log\n      batch_bytes: lots"))
    assert "pipeline.inputs[0].batch_bytes" in found[0] and "'lots'" in found[0]


def test_config_check_prints_the_pipeline_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    result = CliRunner().invoke(cli, ["config", "check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "partitions: 4" in result.stdout and "id: file.0" in result.stdout


def test_config_check_exits_2_with_file_and_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("partitions: 4", "partitions: -1"))
    result = CliRunner().invoke(cli, ["config", "check", "-c", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2:15: service.partitions:" in result.stderr
    assert "Traceback" not in result.output


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "check", "-c", str(tmp_path / "no.yaml")])
    assert result.exit_code == 2
    assert "cannot read config" in result.stderr


def test_config_check_never_prints_the_broker_password(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(GOOD.replace("partitions: 4",
                                 "partitions: 4\n  broker: redis://app:s3cret@redis:6379/0"))
    result = CliRunner().invoke(cli, ["config", "check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert "redis://app:***@redis:6379/0" in result.stdout

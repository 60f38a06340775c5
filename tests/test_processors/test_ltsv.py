"""LTSV labels are what ltsv.org allows, so another format's line does not pass for LTSV."""

from __future__ import annotations

import pytest
from pconf import batch, config

from processors.chain import Chain
from processors.parsers.ltsv import parse_ltsv


@pytest.mark.parametrize("line", [
    'level=info status=200 ts="2024-01-02 03:04:05"',   # logfmt: spaces, '=' and quotes
    "a b:1", 'say"x":1', "k=v:1", "tab:ok\twith space:no", "é:1",
])
def test_labels_outside_the_ltsv_alphabet_make_the_line_not_ltsv(line: str) -> None:
    assert parse_ltsv(line) is None


def test_labels_of_the_ltsv_alphabet_parse() -> None:
    assert parse_ltsv("host:127.0.0.1\treq_time.ms:0.5\tx-forwarded-for:-\tA9:b c=d") == {
        "host": "127.0.0.1", "req_time.ms": "0.5", "x-forwarded-for": "-", "A9": "b c=d"}


def test_a_logfmt_line_falls_through_ltsv_to_logfmt() -> None:
    cfg = config("""
parsers:
  - {name: lt, format: ltsv}
  - {name: lf, format: logfmt}
pipeline:
  filters:
    - {name: parser, key_name: log, parser: [lt, lf]}
""")
    res = Chain(cfg).run(batch(['level=info status=200 ts="2024-01-02 03:04:05"',
                                "level:warn\tstatus:500"]))
    first, second = res.records
    assert {k: first[k] for k in ("level", "status", "ts")} == {
        "level": "info", "status": "200", "ts": "2024-01-02 03:04:05"}
    assert not any("=" in k or " " in k for k in first), first
    assert (second["level"], second["status"]) == ("warn", "500")

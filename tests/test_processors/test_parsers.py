"""Parsers (regex, json, logfmt, ltsv) and what they share: time_key/format/keep, types."""

from __future__ import annotations

import calendar

import pytest
from pconf import config

from processors.chain import build_parsers
from processors.parsers.base import BoundParser, ParseFailure
from processors.parsers.logfmt import parse_logfmt
from processors.parsers.ltsv import parse_ltsv
from processors.parsers.regex import translate_onigmo
from tailrace.errors import ConfigError


def parser(doc: str, name: str = "p") -> BoundParser:
    return build_parsers(config(f"parsers:\n  - {doc}\n"))[name]


def test_onigmo_named_groups_and_back_references_work_as_written() -> None:
    assert translate_onigmo(r"/^(?<a>\w+) \k<a>$/") == r"^(?P<a>\w+) (?P=a)$"
    p = parser(r"{name: p, format: regex, regex: '^(?<word>\w+) \k<word>$'}")
    assert p.parse("hey hey")[0] == {"word": "hey"}
    with pytest.raises(ParseFailure, match="did not match"):
        p.parse("hey you")


def test_optional_groups_that_did_not_take_part_are_left_out() -> None:
    p = parser(r"{name: p, format: regex, regex: '^(?<a>\d+)(?: (?<b>\w+))?$'}")
    assert p.parse("12")[0] == {"a": "12"}
    assert p.parse("12 x")[0] == {"a": "12", "b": "x"}


def test_types_convert_fields_and_keep_text_that_does_not_convert() -> None:
    p = parser(r"{name: p, format: regex, regex: '^(?<i>\S+) (?<f>\S+) (?<b>\S+) (?<h>\S+) "
               r"(?<s>\S+)$', types: 'i:integer f:float b:bool h:hex s:string'}")
    assert p.parse("42 2.5 true ff x")[0] == {"i": 42, "f": 2.5, "b": True, "h": 255, "s": "x"}
    assert p.parse("x 2.5 off zz y")[0] == {"i": "x", "f": 2.5, "b": False, "h": "zz", "s": "y"}


def test_types_convert_the_same_alongside_a_time_key() -> None:
    # With time_key/time_format the regex parser converts in its inlined path.
    p = parser(r"{name: p, format: regex, regex: '^(?<t>\S+) (?<i>\S+) (?<f>\S+) (?<b>\S+) "
               r"(?<h>\S+) (?<s>\S+)$', time_key: t, time_format: '%Y-%m-%d', "
               r"types: 'i:integer f:float b:bool h:hex s:string'}")
    fields, t = p.parse("2024-01-02 42 2.5 true ff x")
    assert (fields, t) == ({"i": 42, "f": 2.5, "b": True, "h": 255, "s": "x"}, 1704153600.0)
    assert p.parse("2024-01-02 x 2.5e3 off zz y")[0] == {"i": "x", "f": 2500.0, "b": False,
                                                          "h": "zz", "s": "y"}


def test_types_given_as_a_map_and_json_values_convert_too() -> None:
    p = parser("{name: p, format: json, types: {code: integer, ok: string}}")
    assert p.parse('{"code": "200", "ok": true}')[0] == {"code": 200, "ok": "True"}


def test_an_unknown_type_is_a_config_error_with_the_line() -> None:
    with pytest.raises(ConfigError, match=r"test.yaml:2:\d+: parsers\[0\].types: .*'int'"):
        config("parsers:\n  - {name: p, format: json, types: {a: int}}\n")


def test_time_key_sets_the_record_time_and_is_removed_unless_time_keep() -> None:
    doc = ("{name: p, format: json, time_key: t, time_format: '%Y-%m-%dT%H:%M:%S.%L%z'%s}")
    line = '{"t": "2024-02-03T04:05:06.789+02:00", "m": "x"}'
    fields, t = parser(doc.replace("%s", "")).parse(line)
    assert t == pytest.approx(calendar.timegm((2024, 2, 3, 2, 5, 6)) + 0.789)
    assert fields == {"m": "x"}
    fields, _ = parser(doc.replace("%s", ", time_keep: true")).parse(line)
    assert fields["t"] == "2024-02-03T04:05:06.789+02:00"


@pytest.mark.parametrize(("doc", "line"), [
    ("{name: p, format: json, time_key: t, time_format: '%Y-%m-%d'}",
     '{"t": "yesterday", "a": 1}'),
    (r"{name: p, format: regex, regex: '^(?<t>\S+) a=(?<a>\d+)$', time_key: t, "
     "time_format: '%Y-%m-%d', types: 'a:integer'}", "yesterday a=1"),
    (r"{name: p, format: regex, regex: '^(?<t>\S+) a=(?<a>\d+)$', time_key: t, "
     "time_format: '%Y-%m-%d'}", "yesterday a=1"),
    ("{name: p, format: logfmt, time_key: t, time_format: '%Y-%m-%d', types: 'a:integer'}",
     "t=yesterday a=1"),
    ("{name: p, format: ltsv, time_key: t, time_format: '%Y-%m-%d', types: 'a:integer'}",
     "t:yesterday\ta:1"),
])
def test_a_time_that_does_not_fit_keeps_the_fields_and_is_flagged_and_counted(
        doc: str, line: str) -> None:
    p = parser(doc)
    fields, t = p.parse(line)
    assert t is None  # the record keeps its read time
    assert fields["a"] in (1, "1") and fields["t"] == "yesterday"  # nothing is lost
    assert fields["time_error"] == ("time 'yesterday' does not match time_format "
                                    "'%Y-%m-%d' (parser 'p')")
    assert p.time_errors == 1
    fields, t = p.parse(line.replace("yesterday", "2024-01-02"))
    assert t == calendar.timegm((2024, 1, 2, 0, 0, 0)) and "time_error" not in fields
    assert p.time_errors == 1


def test_a_bad_time_under_the_key_time_is_dropped_for_the_read_time_and_quoted_in_the_flag(
        ) -> None:
    fields, t = parser("{name: p, format: json, time_key: time, time_format: '%Y'}").parse(
        '{"time": "2024-01-01T00:00:00Z", "a": 1}')
    assert t is None and fields == {
        "a": 1, "time_error": "time '2024-01-01T00:00:00Z' does not match time_format '%Y' "
        "(parser 'p')"}


def test_a_time_key_that_is_no_time_at_all_is_flagged() -> None:
    p = parser("{name: p, format: json, time_key: t, time_format: '%Y'}")
    for value in ("null", "true", "[1]", '{"x": 1}'):
        fields, t = p.parse(f'{{"t": {value}, "a": 1}}')
        assert t is None and fields["a"] == 1 and "time_error" in fields
    assert p.time_errors == 4


def test_time_offset_applies_to_times_without_a_zone() -> None:
    p = parser("{name: p, format: json, time_key: t, time_format: '%Y-%m-%d %H:%M:%S', "
               "time_offset: '+0100'}")
    assert p.parse('{"t": "2024-01-01 01:00:00"}')[1] == calendar.timegm((2024, 1, 1, 0, 0, 0))


def test_a_numeric_time_key_is_taken_as_epoch_seconds() -> None:
    p = parser("{name: p, format: json, time_key: ts}")
    assert p.parse('{"ts": 1700000000.25}')[1] == 1700000000.25


def test_json_parser_takes_objects_only() -> None:
    p = parser("{name: p, format: json}")
    assert p.parse('{"a": {"b": [1, 2]}}')[0] == {"a": {"b": [1, 2]}}
    for bad in ("[1, 2]", "not json", '"text"'):
        with pytest.raises(ParseFailure):
            p.parse(bad)


def test_logfmt_quoted_values_escapes_and_bare_keys() -> None:
    assert parse_logfmt('level=info msg="hello \\"world\\"" took=3ms debug') == {
        "level": "info", "msg": 'hello "world"', "took": "3ms", "debug": True}
    assert parse_logfmt('a="unterminated') is None
    assert parse_logfmt("=novalue") is None


def test_ltsv_fluent_bit_documented_example() -> None:
    # Fluent Bit's LTSV parser example: types and a bracketed time format.
    p = parser("{name: access, format: ltsv, time_key: time, "
               "time_format: '[%d/%b/%Y:%H:%M:%S %z]', types: 'status:integer size:integer'}",
               "access")
    line = ("host:127.0.0.1\tident:-\tuser:-\ttime:[10/Jul/2018:13:27:05 +0200]\t"
            "req:GET / HTTP/1.1\tstatus:200\tsize:16218\treferer:http://127.0.0.1/\t"
            "ua:Mozilla/5.0 (X11; Fedora; Linux x86_64; rv:59.0) Gecko/20100101 Firefox/59.0")
    fields, t = p.parse(line)
    assert t == 1531222025.0
    assert fields == {
        "host": "127.0.0.1", "ident": "-", "user": "-", "req": "GET / HTTP/1.1",
        "status": 200, "size": 16218, "referer": "http://127.0.0.1/",
        "ua": "Mozilla/5.0 (X11; Fedora; Linux x86_64; rv:59.0) Gecko/20100101 Firefox/59.0",
    }


def test_ltsv_rejects_an_item_without_a_label() -> None:
    assert parse_ltsv("a:1\tnolabel") is None
    assert parse_ltsv("a:1:2\tb:") == {"a": "1:2", "b": ""}

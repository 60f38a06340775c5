"""Fluent Bit's stock parsers, as written, parse real sample lines."""

from __future__ import annotations

import calendar
import time

import orjson
import pytest
from helpers import load_test_config

from processors.chain import build_parsers
from processors.parsers.base import BoundParser
from processors.stock import STOCK_PARSERS


@pytest.fixture(scope="module")
def stock() -> dict[str, BoundParser]:
    return build_parsers(load_test_config("service: {}\n"))


def test_nginx_parses_a_combined_access_line(stock: dict[str, BoundParser]) -> None:
    line = ('93.184.216.34 - frank [10/Oct/2023:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" '
            '200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"')
    fields, t = stock["nginx"].parse(line)
    assert fields == {
        "remote": "93.184.216.34", "host": "-", "user": "frank", "method": "GET",
        "path": "/apache_pb.gif", "code": "200", "size": "2326",
        "referer": "http://www.example.com/start.html",
        "agent": "Mozilla/4.08 [en] (Win98; I ;Nav)",
    }
    assert t == calendar.timegm((2023, 10, 10, 20, 55, 36))


def test_apache2_parses_a_combined_access_line(stock: dict[str, BoundParser]) -> None:
    line = ('192.168.2.20 - - [28/Jul/2006:10:27:10 -0300] "GET /cgi-bin/try/ HTTP/1.0" 200 3395'
            ' "-" "Mozilla/5.0"')
    fields, t = stock["apache2"].parse(line)
    assert fields["host"] == "192.168.2.20"
    assert fields["method"] == "GET" and fields["path"] == "/cgi-bin/try/"
    assert fields["code"] == "200" and fields["size"] == "3395"
    assert fields["agent"] == "Mozilla/5.0"
    assert t == calendar.timegm((2006, 7, 28, 13, 27, 10))


def test_syslog_rfc5424_parses_the_rfc_example(stock: dict[str, BoundParser]) -> None:
    line = ("<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
            '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
            "An application event log entry")
    fields, t = stock["syslog-rfc5424"].parse(line)
    assert fields["pri"] == "165" and fields["host"] == "mymachine.example.com"
    assert fields["ident"] == "evntslog" and fields["pid"] == "-" and fields["msgid"] == "ID47"
    assert fields["message"] == "An application event log entry"
    assert fields["time"] == "2003-10-11T22:14:15.003Z"  # time_keep: on, as in Fluent Bit
    assert t == pytest.approx(calendar.timegm((2003, 10, 11, 22, 14, 15)) + 0.003)


def test_a_line_the_regex_does_not_match_raises_parse_failure(
        stock: dict[str, BoundParser]) -> None:
    from processors.parsers.base import ParseFailure

    with pytest.raises(ParseFailure, match="nginx"):
        stock["nginx"].parse("not an access log line")


def test_apache_error_parses_level_client_and_message(stock: dict[str, BoundParser]) -> None:
    line = ("[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] client denied by server "
            "configuration: /export/home/live/ap/htdocs/test")
    fields, t = stock["apache_error"].parse(line)
    assert fields == {"time": "Oct 11 14:32:52 2000", "level": "error", "client": "127.0.0.1",
                      "message": "client denied by server configuration: "
                                 "/export/home/live/ap/htdocs/test"}
    assert t is None  # Fluent Bit's apache_error sets no time_key


def test_syslog_rfc3164_parses_the_rfc_example(stock: dict[str, BoundParser]) -> None:
    line = "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8"
    fields, t = stock["syslog-rfc3164"].parse(line)
    assert fields["pri"] == "34" and fields["host"] == "mymachine" and fields["ident"] == "su"
    assert fields["message"] == "'su root' failed for lonvick on /dev/pts/8"
    assert t is not None and time.gmtime(t)[1:6] == (10, 11, 22, 14, 15)


def test_cri_parses_stream_logtag_and_nanosecond_time(stock: dict[str, BoundParser]) -> None:
    fields, t = stock["cri"].parse("2019-03-05T15:04:05.123456789Z stderr F some message")
    assert fields == {"stream": "stderr", "logtag": "F", "message": "some message"}
    assert t == pytest.approx(calendar.timegm((2019, 3, 5, 15, 4, 5)) + 0.123456789)


def test_docker_parses_json_file_lines_and_keeps_time(stock: dict[str, BoundParser]) -> None:
    fields, t = stock["docker"].parse(
        '{"log":"hello\\n","stream":"stdout","time":"2019-05-30T19:03:09.123456789Z"}')
    assert fields == {"log": "hello\n", "stream": "stdout",
                      "time": "2019-05-30T19:03:09.123456789Z"}
    assert t == pytest.approx(calendar.timegm((2019, 5, 30, 19, 3, 9)) + 0.123456789)


def test_json_and_logfmt_stock_parsers(stock: dict[str, BoundParser]) -> None:
    fields, t = stock["json"].parse('{"key1": 12345, "key2": "abc", '
                                    '"time": "28/Jul/2006:10:22:04 -0700"}')
    assert fields == {"key1": 12345, "key2": "abc"}
    assert t == calendar.timegm((2006, 7, 28, 17, 22, 4))
    assert stock["logfmt"].parse("key1=val1 key2=val2")[0] == {"key1": "val1", "key2": "val2"}


def test_every_stock_parser_the_issue_names_is_shipped(stock: dict[str, BoundParser]) -> None:
    for name in ("apache2", "apache_error", "nginx", "syslog-rfc3164", "syslog-rfc5424", "cri",
                 "docker", "json", "logfmt"):
        assert name in stock


def test_tailrace_parse_tries_a_stock_parser_without_any_config() -> None:
    from click.testing import CliRunner

    from tailrace.cli.main import cli

    line = '10.0.0.1 - - [28/Nov/2026:04:00:01 +0000] "GET /x HTTP/1.1" 200 12 "-" "curl"'
    result = CliRunner().invoke(cli, ["parse", "--parser", "nginx"],
                                input=f"{line}\nnot nginx\n")
    assert result.exit_code == 1  # the second line did not parse
    first, second = (orjson.loads(x) for x in result.stdout.splitlines())
    assert first["path"] == "/x" and first["time"] == 1795838401.0
    assert second == {"log": "not nginx", "error": "parser 'nginx' did not match"}


def test_a_processor_builds_only_the_stock_parsers_its_filters_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import processors.chain as chain

    built: list[str] = []

    class Counting(BoundParser):
        __slots__ = ()

        def __init__(self, pc: object) -> None:
            super().__init__(pc)  # type: ignore[arg-type]
            built.append(self.name)

    monkeypatch.setattr(chain, "BoundParser", Counting)
    config = load_test_config(
        "pipeline:\n  inputs: [{name: tail, path: /tmp/x.log}]\n"
        "  filters: [{name: parser, match: '*', key: log, parser: nginx}]\n"
        "  outputs: [{name: stdout, match: '*'}]\n")
    parsers = chain.Chain(config).steps[0].plugin.parsers  # type: ignore[attr-defined]
    assert built == ["nginx"] and [p.name for p in parsers] == ["nginx"]
    stock = build_parsers(config)
    assert "syslog-rfc5424" in stock and len(stock) == len(set(stock)) == len(STOCK_PARSERS)
    assert built == ["nginx"]  # names, len and `in` build nothing
    assert stock["syslog-rfc5424"] is stock["syslog-rfc5424"]  # built once, at first lookup
    assert built == ["nginx", "syslog-rfc5424"]
    assert stock.get("nope") is None and stock.get("nope", 1) == 1 and "nope" not in stock
    assert stock.get("syslog-rfc5424") is stock["syslog-rfc5424"]
    assert stock.get("json") is stock["json"] and built == ["nginx", "syslog-rfc5424", "json"]

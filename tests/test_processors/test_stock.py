"""Fluent Bit's stock parsers, as written, parse real sample lines."""

from __future__ import annotations

import calendar

import pytest
from helpers import load_test_config

from processors.chain import build_parsers
from processors.parsers.base import BoundParser


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

"""Parsers that ship with tailrace, under Fluent Bit's names, usable without a ``parsers:``.

The regular expressions and time formats are Fluent Bit's (conf/parsers.conf, Apache
License 2.0), kept as written so configs and expectations carry over unchanged. A parser
of the same name in the config's ``parsers:`` section replaces the stock one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["STOCK_PARSERS"]

_CLF_TIME = "%d/%b/%Y:%H:%M:%S %z"

STOCK_PARSERS: list[dict[str, Any]] = [
    {
        "name": "apache",
        "format": "regex",
        "regex": r'^(?<host>[^ ]*) [^ ]* (?<user>[^ ]*) \[(?<time>[^\]]*)\] "(?<method>\S+)(?: +(?<path>[^\"]*?)(?: +\S*)?)?" (?<code>[^ ]*) (?<size>[^ ]*)(?: "(?<referer>[^\"]*)" "(?<agent>[^\"]*)")?$',  # noqa: E501
        "time_key": "time",
        "time_format": _CLF_TIME,
    },
    {
        "name": "apache2",
        "format": "regex",
        "regex": r'^(?<host>[^ ]*) [^ ]* (?<user>[^ ]*) \[(?<time>[^\]]*)\] "(?<method>\S+)(?: +(?<path>[^ ]*) +\S*)?" (?<code>[^ ]*) (?<size>[^ ]*)(?: "(?<referer>[^\"]*)" "(?<agent>.*)")?$',  # noqa: E501
        "time_key": "time",
        "time_format": _CLF_TIME,
    },
    {
        "name": "apache_error",
        "format": "regex",
        "regex": r"^\[[^ ]* (?<time>[^\]]*)\] \[(?<level>[^\]]*)\](?: \[pid (?<pid>[^\]]*)\])?( \[client (?<client>[^\]]*)\])? (?<message>.*)$",  # noqa: E501
    },
    {
        "name": "nginx",
        "format": "regex",
        "regex": r'^(?<remote>[^ ]*) (?<host>[^ ]*) (?<user>[^ ]*) \[(?<time>[^\]]*)\] "(?<method>\S+)(?: +(?<path>[^\"]*?)(?: +\S*)?)?" (?<code>[^ ]*) (?<size>[^ ]*)(?: "(?<referer>[^\"]*)" "(?<agent>[^\"]*)")?$',  # noqa: E501
        "time_key": "time",
        "time_format": _CLF_TIME,
    },
    {
        "name": "json",
        "format": "json",
        "time_key": "time",
        "time_format": _CLF_TIME,
    },
    {
        "name": "docker",
        "format": "json",
        "time_key": "time",
        "time_format": "%Y-%m-%dT%H:%M:%S.%L",
        "time_keep": True,
    },
    {
        "name": "syslog-rfc5424",
        "format": "regex",
        "regex": r"^\<(?<pri>[0-9]{1,5})\>1 (?<time>[^ ]+) (?<host>[^ ]+) (?<ident>[^ ]+) (?<pid>[-0-9]+) (?<msgid>[^ ]+) (?<extradata>(\[(.*)\]|-)) (?<message>.+)$",  # noqa: E501
        "time_key": "time",
        "time_format": "%Y-%m-%dT%H:%M:%S.%L",
        "time_keep": True,
    },
    {
        "name": "syslog-rfc3164-local",
        "format": "regex",
        "regex": r"^\<(?<pri>[0-9]+)\>(?<time>[^ ]* {1,2}[^ ]* [^ ]*) (?<ident>[a-zA-Z0-9_\/\.\-]*)(?:\[(?<pid>[0-9]+)\])?(?:[^\:]*\:)? *(?<message>.*)$",  # noqa: E501
        "time_key": "time",
        "time_format": "%b %d %H:%M:%S",
        "time_keep": True,
    },
    {
        "name": "syslog-rfc3164",
        "format": "regex",
        "regex": r"/^\<(?<pri>[0-9]+)\>(?<time>[^ ]* {1,2}[^ ]* [^ ]*) (?<host>[^ ]*) (?<ident>[a-zA-Z0-9_\/\.\-]*)(?:\[(?<pid>[0-9]+)\])?(?:[^\:]*\:)? *(?<message>.*)$/",  # noqa: E501
        "time_key": "time",
        "time_format": "%b %d %H:%M:%S",
        "time_keep": True,
    },
    {
        "name": "cri",
        "format": "regex",
        "regex": r"^(?<time>[^ ]+) (?<stream>stdout|stderr) (?<logtag>[^ ]*) (?<message>.*)$",
        "time_key": "time",
        "time_format": "%Y-%m-%dT%H:%M:%S.%L%z",
    },
    {
        "name": "logfmt",
        "format": "logfmt",
    },
]

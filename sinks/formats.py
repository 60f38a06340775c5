"""Record serialisations shared by the outputs that write lines (file, stdout)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import orjson

__all__ = ["Formatter", "formatter"]

Formatter = Callable[[list[dict[str, Any]]], bytes]


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _json(records: list[dict[str, Any]]) -> bytes:
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE
    try:
        return b"".join([dumps(r, option=opt) for r in records])
    except TypeError:  # a record carries raw bytes (_raw): serialise those as text
        return b"".join([dumps(r, default=_default, option=opt) for r in records])


def _msgpack(records: list[dict[str, Any]]) -> bytes:
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join([packer.pack(r) for r in records])


def _plain(records: list[dict[str, Any]]) -> bytes:
    """The original line: the raw bytes when the line was not valid UTF-8."""
    out = []
    for r in records:
        raw = r.get("_raw")
        if isinstance(raw, bytes):
            out.append(raw)
        else:
            log = r.get("log")
            out.append(log.encode() if isinstance(log, str) else orjson.dumps(r, default=_default))
        out.append(b"\n")
    return b"".join(out)


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def _template(template: str) -> Formatter:
    def fmt(records: list[dict[str, Any]]) -> bytes:
        return "".join([template.format_map(_Missing(r)) + "\n" for r in records]).encode()

    return fmt


def formatter(name: str, template: str | None = None) -> Formatter:
    """The serialiser for ``format: json | msgpack | plain | template``."""
    if name == "json":
        return _json
    if name == "msgpack":
        return _msgpack
    if name == "plain":
        return _plain
    if name == "template":
        return _template(template or "{time} {log}")
    raise ValueError(f"unknown format {name!r}")

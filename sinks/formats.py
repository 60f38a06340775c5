"""Record serialisations shared by the outputs that write lines (file, stdout).

Each serialiser works in slices of :data:`SLICE` records and yields one bytes chunk per
slice: a few hundred small objects live at a time, so their memory is reused from slice
to slice instead of being mapped afresh (page faults cost much on VMs; a whole sink batch
at once ran about 8x slower per record here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgpack
import orjson

from tailrace.jsonbatch import JsonBatch

__all__ = ["SLICE", "ChunkFormatter", "Formatter", "chunk_formatter", "formatter"]

SLICE = 100
Formatter = Callable[[Sequence[dict[str, Any]]], bytes]
ChunkFormatter = Callable[[Sequence[dict[str, Any]]], Iterator[bytes]]


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _json(records: Sequence[dict[str, Any]]) -> Iterator[bytes]:
    if isinstance(records, JsonBatch):
        # Wire version 2: the processor's JSON lines are what this format writes.
        yield from records.chunks()
        return
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE
    for i in range(0, len(records), SLICE):
        part = records[i : i + SLICE]
        try:
            yield b"".join([dumps(r, option=opt) for r in part])
        except TypeError:
            # A line that was not valid UTF-8 carries its original bytes in ``_raw``; JSON
            # already has it as text in ``log`` (with U+FFFD), so ``_raw`` is left out.
            yield b"".join([dumps({k: v for k, v in r.items() if k != "_raw"},
                                  default=_default, option=opt) for r in part])


def _msgpack(records: Sequence[dict[str, Any]]) -> Iterator[bytes]:
    packer = msgpack.Packer(use_bin_type=True)
    for i in range(0, len(records), SLICE):
        yield b"".join([packer.pack(r) for r in records[i : i + SLICE]])


def _plain(records: Sequence[dict[str, Any]]) -> Iterator[bytes]:
    """The original line: the raw bytes when the line was not valid UTF-8."""
    for i in range(0, len(records), SLICE):
        out = []
        for r in records[i : i + SLICE]:
            raw = r.get("_raw")
            if isinstance(raw, bytes):
                out.append(raw)
            else:
                log = r.get("log")
                out.append(log.encode() if isinstance(log, str)
                           else orjson.dumps(r, default=_default))
            out.append(b"\n")
        yield b"".join(out)


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def _template(template: str) -> ChunkFormatter:
    def fmt(records: Sequence[dict[str, Any]]) -> Iterator[bytes]:
        for i in range(0, len(records), SLICE):
            yield "".join([template.format_map(_Missing(r)) + "\n"
                           for r in records[i : i + SLICE]]).encode()

    return fmt


def chunk_formatter(name: str, template: str | None = None) -> ChunkFormatter:
    """The serialiser for ``format: json | msgpack | plain | template``, slice by slice."""
    if name == "json":
        return _json
    if name == "msgpack":
        return _msgpack
    if name == "plain":
        return _plain
    if name == "template":
        return _template(template or "{time} {log}")
    raise ValueError(f"unknown format {name!r}")


def formatter(name: str, template: str | None = None) -> Formatter:
    """Like :func:`chunk_formatter`, but the whole batch as one bytes object."""
    chunks = chunk_formatter(name, template)

    def whole(records: Sequence[dict[str, Any]]) -> bytes:
        return b"".join(chunks(records))

    return whole

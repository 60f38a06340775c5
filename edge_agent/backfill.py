"""Backfill: feed a whole file (plain or gzip) into the raw streams, exactly once.

A backfilled file goes through the same idempotent producer as a tailed one, under the
identity the agent itself would give it (agent, device, inode, checksum of the first line;
for a gzip file, of its first *decompressed* line, with offsets in the decompressed
bytes). So running the same backfill twice adds nothing (every batch meets CONFLICT and
skips ahead), a backfill interrupted midway resumes at the committed offset, and a
backfill of a file the agent also tails never doubles a line.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import redis

from tailrace.errors import PipelineError
from tailrace.keys import Keys
from tailrace.logs import event
from tailrace.scriptcalls import ProduceResult, Scripts
from tailrace.wire import RawBatch, encode_raw

from .discovery import Discovery
from .formats import Decoded, line_cap, make_decoder, message_limit
from .identity import FINGERPRINT_BYTES, FileId, partition_for
from .multiline import MultilineRule
from .options import TailOptions

__all__ = ["BackfillResult", "backfill_file"]

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK_BYTES = 1024 * 1024
_BACKPRESSURE_WAIT_S = 0.25
Progress = Callable[[int, int], None]


@dataclass
class BackfillResult:
    """What one backfill did: lines and batches committed, and what was already there
    (``already_lines``/``already_bytes``: committed before, by an earlier run or the agent,
    and skipped without producing)."""

    path: str
    identity: str
    partition: int
    lines: int = 0
    batches: int = 0
    skipped_batches: int = 0
    start_offset: int = 0
    end_offset: int = 0
    already_lines: int = 0
    already_bytes: int = 0

    def summary(self) -> str:
        """What happened, in one sentence for the operator."""
        name = self.path
        if not self.lines:
            if self.already_lines:
                return (f"all {self.already_lines:,} lines of {name} were already in the "
                        f"pipeline (partition {self.partition}): nothing to add")
            return f"{name} has no complete line to backfill"
        batches = f"{self.batches:,} batch" + ("es" if self.batches != 1 else "")
        text = f"{self.lines:,} lines of {name} committed in {batches} (partition {self.partition})"
        if self.already_lines:
            text += f"; {self.already_lines:,} lines before them were already in the pipeline"
        return text


def _open(path: Path) -> tuple[IO[bytes], IO[bytes], bool]:
    """(decompressed stream, raw file, is gzip)."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    head = raw.read(2)
    raw.seek(0)
    if head == _GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")), raw, True
    return raw, raw, False


def _identity(path: Path, stream: IO[bytes], st: os.stat_result) -> FileId:
    head = stream.read(FINGERPRINT_BYTES)
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < FINGERPRINT_BYTES and head:
        pass  # a one-line file without a newline: the whole file is its first line
    elif not head:
        raise PipelineError(f"{path} is empty: nothing to backfill")
    return FileId(st.st_dev, st.st_ino, zlib.crc32(head))


def _skip(stream: IO[bytes], n: int) -> int:
    """Read past ``n`` bytes; returns the lines they held (for the summary)."""
    lines = 0
    while n > 0:
        got = stream.read(min(n, _CHUNK_BYTES))
        if not got:
            raise PipelineError(f"the committed offset is past the end of the file ({n} bytes "
                                "short): was it truncated since it was backfilled?")
        n -= len(got)
        lines += got.count(b"\n")
    return lines


def backfill_file(
    client: redis.Redis,
    keys: Keys,
    options: TailOptions,
    *,
    path: str | os.PathLike[str],
    agent: str,
    input_id: str,
    partitions: int,
    base_dir: Path,
    backlog_limit: int = 0,
    memory_limit: int | None = None,
    progress: Progress | None = None,
) -> BackfillResult:
    """Commit every line of ``path`` to the raw streams (see the module docstring).

    Args:
        backlog_limit: wait while the partition's raw backlog has this many entries.
        memory_limit: wait while Redis uses this many bytes (0: 90% of its maxmemory;
            None: no check), as the agent does.
        progress: called with (bytes of the file read, file size) after every batch.

    Raises:
        PipelineError: the file cannot be read or changed under the backfill.
    """
    p = Path(path).resolve()
    try:
        st = p.stat()
        stream, raw, _is_gzip = _open(p)
    except OSError as exc:
        raise PipelineError(f"cannot read {p}: {exc.strerror}") from None
    scripts = Scripts(client, keys)
    rule = MultilineRule.build(options.multiline) if options.multiline else None
    decode = make_decoder(options.format, rule, message_limit(
        options.format, options.max_line_bytes, options.long_lines))
    desc = Discovery(options, base_dir=base_dir, host=agent, input_id=input_id,
                     plugin_name="tail").describe(str(p))
    with raw, stream:
        fid = _identity(p, stream, st)
        identity = fid.key(agent)
        partition = partition_for(identity, partitions)
        stored = client.hget(keys.offsets(partition), identity)
        pos = int(stored) if stored is not None else 0
        stream.seek(0)
        result = BackfillResult(str(p), identity, partition, start_offset=pos,
                                already_lines=_skip(stream, pos), already_bytes=pos)
        if progress is not None:
            progress(raw.tell(), st.st_size)  # what was already there counts as done
        feeder = _Feeder(stream, decode, options, pos, result)
        for lines, offsets, times, streams, start, end in feeder.batches():
            batch = RawBatch(agent=agent, input=input_id, tag=desc.tag, path=str(p),
                             file=identity, start=start, end=end, lines=lines,
                             offsets=offsets, times=times, streams=streams, meta=desc.meta,
                             time=time.time())
            resume = _produce(scripts, partition, batch, backlog_limit, memory_limit, result)
            if resume is not None and resume > end:
                feeder.skip_to(resume)  # committed further by someone else: go on from there
            if progress is not None:
                progress(raw.tell(), st.st_size)
        result.end_offset = feeder.pos
        if progress is not None:
            progress(st.st_size, st.st_size)
    event(log, logging.INFO, "backfill_file_done", f"{p}: {result.summary()}",
          partition=partition, file=identity, lines=result.lines,
          already_lines=result.already_lines)
    return result


class _Feeder:
    """Decoded batches of a byte stream read from offset ``pos`` to its end."""

    def __init__(self, stream: IO[bytes], decode: Callable[[bytes, int, bool], Decoded],
                 options: TailOptions, pos: int, result: BackfillResult) -> None:
        self.result = result  # counts the lines skipped because they were there already
        self.stream = stream
        self.decode = decode
        self.o = options
        self.pos = pos  # offset of the first byte not yet decoded
        self.carry = b""  # bytes read but not decoded yet (they start at pos)
        self.container = options.format != "plain"

    def skip_to(self, offset: int) -> None:
        gap = offset - self.pos
        if gap <= len(self.carry):
            self.result.already_lines += self.carry.count(b"\n", 0, gap)
            self.carry = self.carry[gap:]
        else:
            self.result.already_lines += self.carry.count(b"\n") + _skip(
                self.stream, gap - len(self.carry))
            self.carry = b""
        self.result.already_bytes += gap
        self.pos = offset

    def _decode_more(self) -> tuple[Decoded, bool]:
        chunk = self.stream.read(self.o.read_bytes)  # batches stay near batch_bytes
        eof = not chunk
        buf = self.carry + chunk
        if eof and buf and not buf.endswith(b"\n"):
            buf += b"\n"  # the file is complete: its last line needs no newline
        d = self.decode(buf, self.pos, eof)
        consumed = min(d.consumed, len(self.carry) + len(chunk))
        cap = line_cap(self.o.format, self.o.max_line_bytes)
        if not d.lines and consumed == 0 and len(buf) > cap:
            head = buf[:cap]  # an over-long line is split, as by the agent
            d = Decoded([head], [self.pos], [0.0] if self.container else None,
                        ["stdout"] if self.container else None, len(head))
            consumed = len(head)
        self.carry = b"" if eof else buf[consumed:]
        self.pos += consumed
        return d, eof

    def batches(self) -> Iterator[tuple[list[bytes], list[int], list[float] | None,
                                        list[str] | None, int, int]]:
        """(lines, offsets, times, streams, start, end) up to ``batch_bytes`` each."""
        eof = False
        while not eof:
            start = self.pos
            lines: list[bytes] = []
            offsets: list[int] = []
            times: list[float] = []
            streams: list[str] = []
            while not eof and self.pos - start < self.o.batch_bytes \
                    and len(lines) < self.o.batch_lines:
                d, eof = self._decode_more()
                lines += d.lines
                offsets += d.offsets
                if self.container:
                    times += d.times or [0.0] * len(d.lines)
                    streams += d.streams or ["stdout"] * len(d.lines)
            if lines:
                yield (lines, offsets, times if self.container else None,
                       streams if self.container else None, start, self.pos)


def _produce(scripts: Scripts, partition: int, batch: RawBatch, backlog_limit: int,
             memory_limit: int | None, result: BackfillResult) -> int | None:
    """Commit one batch; returns the offset to skip to after a CONFLICT, else None."""
    payload = encode_raw(batch)
    while True:
        res = ProduceResult.parse(scripts.produce(partition, batch.file, batch.start, batch.end,
                                                  payload, backlog_limit,
                                                  memory_limit=memory_limit))
        if res.status == "ok":
            result.lines += len(batch.lines)
            result.batches += 1
            return None
        if res.status == "conflict":
            result.skipped_batches += 1
            if res.offset >= batch.end:  # this batch was committed before (an earlier run)
                result.already_lines += len(batch.lines)
                result.already_bytes += batch.end - batch.start
            return res.offset if res.offset > batch.start else None
        time.sleep(_BACKPRESSURE_WAIT_S)  # backlog or memory over its limit: wait, as the agent

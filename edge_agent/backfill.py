"""Backfill: feed a whole file (plain or gzip) into the raw streams, exactly once.

A backfilled file goes through the same idempotent producer as a tailed one, under the
identity the agent gives it (:mod:`.identity`: agent, device, inode, checksum of the first
line, generation; a gzip file is read through gzip into an unlinked scratch file, as
:mod:`.siblings` does at start-up, so its offsets are in the decompressed bytes), and is cut
into lines by the agent's own :class:`~.reader.Reader` (``format``, ``multiline``,
``max_line_bytes`` and ``long_lines`` apply as they do to a tailed file). So:

- running the same backfill twice adds nothing (every batch meets CONFLICT and skips
  ahead), and one interrupted midway resumes at the committed offset;
- a file the agent also tails (the same inode) shares its identity and current generation:
  no line twice. One truncated since the agent read it (the offset is past its end, or the
  bytes before the agent's checkpointed offset differ) is refused: the agent reads it
  again as its next generation;
- a rotated copy (copytruncate's, a ``.gz``: another inode, the same first line) is a
  file the agent read under the original's identity. With the agent's checkpoint at hand
  (``data_dir``: backfill on the agent's host), the copy holding the bytes the agent read
  before a checkpointed offset (the checksum kept with it) is backfilled under *that*
  identity, from Redis's offset: only the lines the agent never read are added, and an
  agent recovering the same copy later finds them committed. Without the checkpoint, or
  when it cannot tell (several matches, an entry without checksum), a file whose first
  line is that of a file the agent committed is refused rather than doubled.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from tailrace.errors import PipelineError
from tailrace.keys import Keys
from tailrace.logs import event
from tailrace.scriptcalls import ProduceResult, Scripts
from tailrace.wire import RawBatch, encode_raw

from .checkpoint import Checkpoint, checkpoint_path
from .discovery import Discovery
from .followed import FileIdentity, TailedFile
from .identity import (
    FileId,
    base_of,
    end_checksum,
    has_end,
    head_checksum,
    identity_key,
    parse_base,
    partition_for,
)
from .options import TailOptions
from .reader import Reader
from .siblings import GZIP_MAGIC, Sibling, SiblingError, open_sibling

__all__ = ["BackfillResult", "backfill_file"]

log = logging.getLogger(__name__)

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
    data_dir: Path | None = None,
    backlog_limit: int = 0,
    memory_limit: int | None = None,
    progress: Progress | None = None,
) -> BackfillResult:
    """Commit every line of ``path`` to the raw streams (see the module docstring).

    Args:
        data_dir: the agent's data folder (its checkpoint tells a rotated copy of a file it
            read; a .gz is decompressed there). None: no checkpoint, the system's temp folder.
        backlog_limit: wait while the partition's raw backlog has this many entries.
        memory_limit: wait while Redis uses this many bytes (0: 90% of its maxmemory;
            None: no check), as the agent does.
        progress: called with (bytes of the file read, file size) after every batch.

    Raises:
        PipelineError: the file cannot be read, changed under the backfill, or may hold
            lines the agent read under another identity (see the module docstring).
    """
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise PipelineError(f"cannot read {p}: {exc.strerror}") from None
    cp_path = checkpoint_path(data_dir, agent) if data_dir is not None else None
    scratch = cp_path.parent if cp_path is not None else Path(tempfile.gettempdir())
    sib = _open(p, st, scratch)
    try:
        cp = Checkpoint.load(cp_path) if cp_path is not None and cp_path.exists() else None
        identity, pos = _identity(client, keys, sib, agent, partitions, cp, cp_path)
        partition = partition_for(base_of(identity), partitions)
        result = BackfillResult(str(p), identity, partition, start_offset=pos,
                                already_lines=_count_lines(sib.fd, 0, pos), already_bytes=pos)
        desc = Discovery(options, base_dir=base_dir, host=agent, input_id=input_id,
                         plugin_name="tail").describe(str(p))
        ident = FileIdentity(sib.fid, agent, partitions)
        ident.claim(identity)  # a rotated copy's lines keep the original's identity
        tf = TailedFile(str(p), sib.fd, ident, desc.tag, desc.meta, size=sib.size)
        tf.seek(pos, None)
        _feed(Scripts(client, keys), tf, Reader.for_options(options, _uncounted, input_id),
              options, _Limits(backlog_limit, memory_limit), result,
              _raw_progress(progress, st.st_size, sib.size), agent, input_id)
        result.end_offset = tf.out.committed
        if progress is not None:
            progress(st.st_size, st.st_size)
    finally:
        os.close(sib.fd)
    event(log, logging.INFO, "backfill_file_done", f"{p}: {result.summary()}",
          partition=partition, file=identity, lines=result.lines,
          already_lines=result.already_lines)
    return result


@dataclass(frozen=True, slots=True)
class _Limits:
    backlog: int
    memory: int | None


def _uncounted(_name: str, _n: int) -> None:
    """The reader's counters (a backfill has no status page: its result says it all)."""


def _raw_progress(progress: Progress | None, raw_size: int,
                  size: int) -> Callable[[int], None]:
    """Progress in bytes of the file on disk from an offset in its (decompressed) bytes."""
    def report(offset: int) -> None:
        if progress is not None:
            progress(raw_size if offset >= size else offset * raw_size // max(1, size),
                     raw_size)
    return report


def _open(p: Path, st: os.stat_result, scratch: Path) -> Sibling:
    """The file's bytes (a .gz decompressed into an unlinked scratch file) and identity."""
    try:
        sib = open_sibling(str(p), st, scratch, lambda _crc: True)
    except SiblingError as exc:
        raise PipelineError(f"cannot backfill {p}: it {exc}") from None
    if sib is not None:
        return sib
    # No newline in its first bytes: a one-line file without newline (it is complete).
    try:
        data = p.read_bytes()
        gz = data[:2] == GZIP_MAGIC
        if gz:
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise PipelineError(f"cannot read {p}: {exc}") from None
    crc = head_checksum(data, whole=True)
    if crc is None:
        raise PipelineError(f"{p} is empty: nothing to backfill")
    with tempfile.TemporaryFile(dir=scratch) as f:
        f.write(data)
        f.flush()
        fd = os.dup(f.fileno())
    return Sibling(str(p), fd, FileId(st.st_dev, st.st_ino, crc), len(data), st.st_mtime, gz)


def _identity(client: redis.Redis, keys: Keys, sib: Sibling, agent: str, partitions: int,
              cp: Checkpoint | None, cp_path: Path | None) -> tuple[str, int]:
    """The identity the file's lines go under and the offset they resume from."""
    base = sib.fid.key(agent)
    part = partition_for(base, partitions)
    stored_gen = client.hget(keys.generations(part), base)
    gen = max(int(stored_gen or 0), cp.generation(base) if cp else 0)
    identity = identity_key(base, gen)
    stored = client.hget(keys.offsets(part), identity)
    entry = cp.entry(identity) if cp else None
    if stored is None and entry is None and stored_gen is None and gen == 0:
        copy = _copy_of(client, keys, sib, agent, partitions, cp, cp_path)
        if copy is not None:
            return copy
    offset = int(stored) if stored is not None else entry.offset if entry else 0
    if offset > sib.size or (entry is not None and entry.offset <= sib.size
                             and not has_end(sib.fd, entry.offset, entry.crc)):
        raise PipelineError(
            f"{sib.path} no longer holds what agent {agent} read of it ({offset:,} bytes "
            f"committed, {sib.size:,} there now): it was truncated or rewritten since "
            "(copytruncate?). The agent reads it again as a new generation if an input "
            "follows it; backfill cannot tell its new lines from the old: not backfilling it")
    return identity, offset


def _copy_of(client: redis.Redis, keys: Keys, sib: Sibling, agent: str, partitions: int,
             cp: Checkpoint | None, cp_path: Path | None) -> tuple[str, int] | None:
    """The identity and offset of the file the agent read that ``sib`` is a copy of, or
    None when it is none of them; refuses when it cannot tell."""
    base, crc = sib.fid.key(agent), sib.fid.crc
    if cp is None:
        same = _same_head_in_redis(client, keys, agent, crc, base, partitions)
        if same:
            raise PipelineError(
                f"{sib.path} begins with the same line as {len(same)} file(s) agent {agent} "
                f"committed ({same[0]}): it is likely a rotated copy (copytruncate, .gz) whose "
                "lines are already in the pipeline, and without the agent's checkpoint"
                f"{f' ({cp_path})' if cp_path else ''} backfill cannot tell which lines are "
                "new: not backfilling it. Run the backfill on the agent's host (its data_dir)")
        return None
    matches, unsure = [], []
    for identity, fc in cp.files.items():
        fid = parse_base(base_of(identity))
        if fid is None or fid.crc != crc or base_of(identity) == base:
            continue
        if fc.crc is None:
            unsure.append(fc.path)
        elif sib.size >= fc.offset and end_checksum(sib.fd, fc.offset) == fc.crc:
            matches.append((identity, fc.offset))
    if len(matches) > 1 or (unsure and not matches):
        which = ", ".join([m[0] for m in matches] or unsure)
        raise PipelineError(
            f"{sib.path} may hold lines agent {agent} read from {which}, and its checkpoint "
            "cannot tell which (several match, or no checksum of the bytes read): not "
            "backfilling it rather than doubling lines")
    if not matches:
        return None
    identity, local = matches[0]
    stored = client.hget(keys.offsets(partition_for(base_of(identity), partitions)), identity)
    offset = int(stored) if stored is not None else local  # Redis is the authority
    event(log, logging.INFO, "backfill_copy",
          f"{sib.path} is a copy of {cp.files[identity].path} as agent {agent} read it: "
          "backfilling it under that file's identity (only the lines the agent has not "
          "committed are added)", file=identity)
    return identity, min(offset, sib.size)  # the agent read past the copy: all of it is there


def _same_head_in_redis(client: redis.Redis, keys: Keys, agent: str, crc: int, base: str,
                        partitions: int) -> list[str]:
    """Identities of this agent with that first-line checksum that Redis has offsets for."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", agent) + f":*:{crc:08x}*"
    out = []
    for part in range(partitions):
        for name, _offset in client.hscan_iter(keys.offsets(part), match=pattern, count=1000):
            identity = name.decode() if isinstance(name, bytes) else str(name)
            fid = parse_base(base_of(identity))
            if fid is not None and fid.crc == crc and base_of(identity) != base:
                out.append(identity)
    return out


def _count_lines(fd: int, start: int, end: int) -> int:
    """Newlines in ``[start, end)`` of the file (the lines already in the pipeline)."""
    lines = 0
    while start < end:
        got = os.pread(fd, min(end - start, _CHUNK_BYTES), start)
        if not got:
            break
        start += len(got)
        lines += got.count(b"\n")
    return lines


def _feed(scripts: Scripts, tf: TailedFile, reader: Reader, o: TailOptions, limits: _Limits,
          result: BackfillResult, progress: Callable[[int], None], agent: str,
          input_id: str) -> None:
    """Read ``tf`` from its offset to its end, as the tail input reads (the same reader),
    committing a batch every ``batch_lines``/``batch_bytes``."""
    now = 0.0  # a constant clock: nothing is flushed by time, the whole file is there
    b, out = tf.buf, tf.out
    progress(out.committed)  # what was already there counts as done
    done = False
    while not done:
        if not reader.read(tf, now):  # the end: what is pending, then a last unended line
            reader.flush(tf, "end", now)
            reader.read_last_line(tf, now)
            done = True
        if b.pos != out.committed and (done or len(b.lines) >= o.batch_lines
                                       or b.nbytes >= o.batch_bytes):
            batch = tf.take_batch(agent, input_id)
            resume = _produce(scripts, tf.partition, batch, limits, result)
            if resume is None:  # committed: the file part's own way (see followed.py)
                out.seal(batch, None)  # no end checksum: a backfill never checks it again
                out.accept()
            else:
                if resume > batch.end:  # committed further by someone else: go on from there
                    gap = min(resume, tf.size)
                    result.already_lines += _count_lines(tf.fd, batch.end, gap)
                    result.already_bytes += gap - batch.end
                tf.seek(resume, None)  # Redis wins, as for the agent
                done = done and resume >= tf.size
            progress(out.committed)


def _produce(scripts: Scripts, partition: int, batch: RawBatch, limits: _Limits,
             result: BackfillResult) -> int | None:
    """Commit one batch; returns Redis's offset after a CONFLICT, else None."""
    payload = encode_raw(batch) if batch.lines else b""  # only skipped bytes: move the offset
    while True:
        res = ProduceResult.parse(scripts.produce(partition, batch.file, batch.start, batch.end,
                                                  payload, limits.backlog,
                                                  memory_limit=limits.memory))
        if res.status == "ok":
            result.lines += len(batch.lines)
            result.batches += 1
            return None
        if res.status == "conflict":
            result.skipped_batches += 1
            if res.offset >= batch.end:  # this batch was committed before (an earlier run)
                result.already_lines += len(batch.lines)
                result.already_bytes += batch.end - batch.start
            if res.offset == batch.start:
                raise PipelineError(f"Redis refused the batch of {batch.path} at byte "
                                    f"{batch.start} although it holds that offset: retry")
            return res.offset
        time.sleep(_BACKPRESSURE_WAIT_S)  # backlog or memory over its limit: wait, as the agent

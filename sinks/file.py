"""The ``file`` output: records to files named by a template, with rotation, exactly once.

Exactly once rests on four things. The output has one writer (an output-wide lease).
Every commit records, for each file it touched, ``seq:gen:size:start`` in the partition's
checkpoint, in the same script that acks the entries, after the bytes are flushed and
fsynced: ``seq`` counts this output's commits (the highest is the latest, whichever
partition holds it), ``gen`` the file's rotations, ``size`` its committed length and
``start`` when its current generation began. Before the first write to a file the
checkpoint does not know, its size is journaled locally (fsynced). And files rotate only
between batches, when all they hold is committed: the rotation is journaled locally
(fsynced), then the file is renamed to ``<path>.<gen+1>`` and a new one begins; the next
commit records the new generation.

When a worker takes the output over (or after a broker error) it restores the layout of
the last commit: a journaled rotation the checkpoint does not know yet is undone (the new
file holds only uncommitted bytes: it is removed and the rotated file renamed back), then
the file is cut to its committed size (or journaled size). A partial line or an
uncommitted batch written before a crash disappears, and the redelivered entries write
it again, once. Files the journal does not name are never renamed or removed.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from tailrace.jsonbatch import JsonBatch
from tailrace.logs import event
from tailrace.options import ByteSize, OutputOptions
from tailrace.outcome import Delivered, Outcome, Retry
from tailrace.plugins import OutputPlugin, Record

from .context import OutputContext
from .formats import chunk_formatter
from .journal import Committed, cut, fsync_dir, load_journal, save_journal

__all__ = ["FileOutput", "FileOutputOptions", "rotated_name"]

log = logging.getLogger(__name__)

DEFAULT_MAX_OPEN_FILES = 64


class FileOutputOptions(OutputOptions):
    path: str = Field(
        description="File path template: `{tag}` and strftime fields of the record time "
        "(`./out/{tag}-%Y-%m-%d.log`). Relative to the config file."
    )
    format: Literal["json", "msgpack", "plain", "template"] = Field(
        "json", description="`json` lines, `msgpack`, `plain` (the original line) or `template`."
    )
    template: str = Field("{time} {log}", description="Line template for `format: template`.")
    fsync: bool = Field(True, description="fsync before acknowledging (off: faster, may lose "
                        "the last batches on a power cut; never on a process crash).")
    mkdir: bool = Field(True, description="Create missing folders.")
    rotate_bytes: ByteSize = Field(
        0, description="Rotate a file once it holds this many bytes (0 = never). Rotation "
        "happens between batches, so a file may pass the limit by up to one batch.")
    rotate_interval_s: float = Field(
        0, ge=0, description="Rotate a file whose current generation is older than this "
        "(0 = never); checked when the next batch is written to it.")
    rotate_keep: int = Field(
        0, ge=0, description="Rotated files to keep per path, oldest removed first (0 = all).")
    max_open_files: int = Field(
        DEFAULT_MAX_OPEN_FILES, ge=1, description="Open files kept; the least recently "
        "written are closed beyond this (many `{tag}` or dated paths).")


def rotated_name(path: str, generation: int) -> str:
    """The name of ``path``'s ``generation``-th rotated file (1 is the oldest)."""
    return f"{path}.{generation}"


@dataclass(slots=True)
class _File:
    gen: int
    size: int
    start: int


class FileOutput(OutputPlugin):
    name: ClassVar[str] = "file"
    description: ClassVar[str] = "Write records to files (JSON lines, msgpack, plain, template)."
    Options: ClassVar[type[FileOutputOptions]] = FileOutputOptions
    single_writer: ClassVar[bool] = True

    def __init__(self, options: FileOutputOptions, ctx: OutputContext) -> None:
        self.o = options
        self.template = str(ctx.resolve_path(options.path))
        self.has_time = "%" in self.template
        self.format = chunk_formatter(options.format, options.template)
        self.journal_path = ctx.state_dir / "files.json"
        # path -> size before our first write; path -> generation of an uncommitted rotation
        self.journal, self.rotations = load_journal(self.journal_path)
        self.known: set[str] = set()  # paths the Redis checkpoint knows
        self.files: dict[str, _File] = {}  # state of paths seen since the last recovery
        self.fds: OrderedDict[str, int] = OrderedDict()  # open files, least recent first
        self.touched: set[str] = set()
        self.seq = 0
        self.clock = time.time
        self._path_cache: dict[tuple[str, int], str] = {}

    # -- recovery -----------------------------------------------------------------------
    def recover(self, checkpoints: list[Mapping[bytes, bytes]]) -> None:
        """Restore every file to the layout and size of the last commit (or the journal)."""
        committed: dict[str, Committed] = {}
        for ckpt in checkpoints:
            for k, v in ckpt.items():
                c = Committed.parse(v)
                path = k.decode()
                best = committed.get(path)
                if best is None or (c.seq, c.gen, c.size) > (best.seq, best.gen, best.size):
                    committed[path] = c
        self._close_all()
        self.files.clear()
        self.known = set(committed)
        self.seq = max((c.seq for c in committed.values()), default=0)
        for path, c in committed.items():
            self.files[path] = _File(c.gen, c.size, c.start)
            self._restore(path, c)
        for path, size in self.journal.items():
            if path not in committed:
                cut(path, size)
        for path, gen in self.rotations.items():
            if path not in committed:
                event(log, logging.WARNING, "file_output_checkpoint_behind",
                      f"{path}: rotated to generation {gen}, but no commit knows the file; "
                      "did Redis lose data? Leaving it as it is (records may repeat)")
        # Journal entries the checkpoint now covers are no longer needed.
        files = {p: s for p, s in self.journal.items() if p not in self.known}
        if files != self.journal or self.rotations:
            self.journal, self.rotations = files, {}
            save_journal(self.journal_path, self.journal, self.rotations)

    def _restore(self, path: str, c: Committed) -> None:
        rot = self.rotations.get(path)
        if rot is not None and rot > c.gen:
            if rot != c.gen + 1:
                self.files[path].gen = rot
                event(log, logging.WARNING, "file_output_checkpoint_behind",
                      f"{path}: rotated to generation {rot} but the last commit knows "
                      f"generation {c.gen}; did Redis lose data? Leaving the files as they "
                      "are (records may repeat)")
                return
            rotated = rotated_name(path, rot)
            if os.path.exists(rotated):
                # The rotation after the last commit: the new file is all uncommitted.
                if os.path.exists(path):
                    os.unlink(path)
                os.rename(rotated, path)
                fsync_dir(path)
                event(log, logging.INFO, "file_output_rotation_undone",
                      f"{path}: undid rotation to {rotated}, which was not committed yet")
        cut(path, c.size)

    # -- writing ------------------------------------------------------------------------
    def _path(self, record: Record) -> str:
        return self._path_of(record.get("_tag", ""), record.get("time"))

    def _path_of(self, tag: str, t: Any) -> str:
        if not self.has_time:
            key = (tag, 0)
        else:
            key = (tag, int(t) if isinstance(t, (int, float)) else int(self.clock()))
        path = self._path_cache.get(key)
        if path is None:
            path = self.template.replace("{tag}", tag)
            if self.has_time:
                path = time.strftime(path, time.gmtime(key[1]))
            if len(self._path_cache) > 4096:
                self._path_cache.clear()
            self._path_cache[key] = path
        return path

    def _state(self, path: str) -> _File:
        f = self.files.get(path)
        if f is None:
            if path not in self.journal:
                # Journal the size before the first write, so recovery can cut it back.
                self.journal[path] = os.stat(path).st_size if os.path.exists(path) else 0
                save_journal(self.journal_path, self.journal, self.rotations)
            f = self.files[path] = _File(0, self.journal[path], int(self.clock()))
        return f

    def _open(self, path: str, f: _File) -> int:
        fd = self.fds.get(path)
        if fd is None:
            if self.o.mkdir:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self.fds[path] = fd
            f.size = os.fstat(fd).st_size
        else:
            self.fds.move_to_end(path)
        return fd

    def _due(self, f: _File, now: float) -> bool:
        o = self.o
        if f.size == 0:
            return False
        if o.rotate_bytes and f.size >= o.rotate_bytes:
            return True
        return bool(o.rotate_interval_s) and now - f.start >= o.rotate_interval_s

    def _rotate(self, path: str, f: _File, now: float) -> None:
        """Rename ``path`` to its next generation (only between batches: all committed)."""
        fd = self.fds.pop(path, None)
        if fd is not None:
            os.close(fd)
        gen = f.gen + 1
        while os.path.exists(rotated_name(path, gen)):
            gen += 1  # never overwrite a file (e.g. left by an older pipeline)
        self.rotations[path] = gen  # durable before the rename: recovery may undo it
        save_journal(self.journal_path, self.journal, self.rotations)
        if os.path.exists(path):
            os.rename(path, rotated_name(path, gen))
            fsync_dir(path)
        f.gen, f.size, f.start = gen, 0, int(now)
        self.touched.add(path)
        if self.o.rotate_keep and gen > self.o.rotate_keep:
            try:
                os.unlink(rotated_name(path, gen - self.o.rotate_keep))
            except FileNotFoundError:
                pass
        event(log, logging.INFO, "file_output_rotated",
              f"{path} rotated to {rotated_name(path, gen)}", path=path, generation=gen)

    def _groups(self, records: Sequence[Record]) -> dict[str, Sequence[Record]]:
        """The batch's records by the file they go to."""
        if isinstance(records, JsonBatch):
            if self.o.format != "json":
                records = records.records()  # decoded before anything is written
            else:  # route by the tags and times beside the JSON: nothing decoded
                tags, times = records.tags, records.times
                if not self.has_time and tags and tags.count(tags[0]) == len(tags):
                    return {self._path_of(tags[0], None): records}
                at: dict[str, list[int]] = {}
                path_of = self._path_of
                for i, (tag, t) in enumerate(zip(tags, times, strict=True)):
                    at.setdefault(path_of(tag, t), []).append(i)
                return {p: records.select(ix) for p, ix in at.items()}
        groups: dict[str, list[Record]] = {}
        if not self.has_time and records and len(set(map(_tag_of, records))) == 1:
            groups[self._path(records[0])] = list(records)
        else:
            for r in records:
                groups.setdefault(self._path(r), []).append(r)
        return dict(groups)

    def write_batch(self, records: Sequence[Record]) -> Outcome:
        groups = self._groups(records)
        rotating = bool(self.o.rotate_bytes or self.o.rotate_interval_s)
        now = self.clock()
        fds = []
        before: dict[str, int] = {}  # path -> its size before this batch
        try:
            for path, recs in groups.items():
                f = self._state(path)
                if rotating and self._due(f, now):
                    self._rotate(path, f, now)
                fd = self._open(path, f)
                before.setdefault(path, f.size)
                for data in self.format(recs):
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    f.size += len(data)
                self.touched.add(path)
                fds.append(fd)
            if self.o.fsync:
                for fd in fds:
                    os.fsync(fd)
        except OSError as exc:
            # A full disk or a permission problem: take this batch's bytes back out and
            # retry it later (the entries stay pending: backpressure, never a dead letter).
            self._take_back(before, exc)
            where = exc.filename or next(iter(before), self.template)
            return Retry(f"file: cannot write {where}: {exc.strerror or exc} (free space or "
                         "fix permissions; retrying)", list(records))
        while len(self.fds) > self.o.max_open_files:
            _, fd = self.fds.popitem(last=False)
            os.close(fd)
        return Delivered()

    def _take_back(self, before: dict[str, int], error: OSError) -> None:
        """Cut the files written by a failed batch back to their sizes before it."""
        for path, size in before.items():
            fd = self.fds.get(path)
            try:
                if fd is not None:
                    os.ftruncate(fd, size)
                elif os.path.exists(path):
                    os.truncate(path, size)
            except OSError:
                raise error from None  # cannot undo: the consumer rolls back via recovery
            self.files[path].size = size

    def checkpoint(self) -> dict[str, str | int]:
        """State of the files written since the last call (committed with the acks)."""
        if not self.touched:
            return {}
        self.seq += 1
        out: dict[str, str | int] = {}
        for path in self.touched:
            f = self.files[path]
            out[path] = Committed(self.seq, f.gen, f.size, f.start).encode()
        self.known.update(self.touched)
        self.touched.clear()
        return out

    def committed(self) -> None:
        """The checkpoint of the last batch is in Redis: its files need no journal entry.

        Dropping them now matters when Redis later loses its data: recovery then finds no
        checkpoint, and a stale journal entry would cut delivered lines off the file.
        """
        stale = [p for p in self.journal if p in self.known]
        if stale:
            for p in stale:
                del self.journal[p]
            save_journal(self.journal_path, self.journal, self.rotations)

    def _close_all(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.touched.clear()

    def close(self) -> None:
        self._close_all()


_tag_of = itemgetter("_tag")  # every decoded record has one (the wire format checks)

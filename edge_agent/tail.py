"""The ``tail`` input: follows files through rotation and truncation, in batches of messages.

:class:`TailInput` reads the files of its :class:`~edge_agent.files.FileTable` fairly (up
to one batch per file per pass, the first file changing every pass), within a memory
budget (``mem_buf_limit``), and seals batches for the agent loop. It never talks to Redis:
the agent (:mod:`edge_agent.agent`) sets where each file starts (:meth:`TailInput.begin`)
and commits the sealed batches (:class:`~edge_agent.offsets.Offsets` moves what is
committed). The input and its table own a followed file's own slots (where it is, its
descriptor, size, rotation, start); its read buffer is the reader's, its identity and what
is in flight change through their methods (see :mod:`edge_agent.followed`).

What happens on each kind of rotation:

- rename + create: the renamed file keeps its identity (device, inode, first-line
  checksum); it is read to its end and closed once drained and ``rotate_wait_s`` passed.
  The new file at the path is a new identity, read from its start.
- copytruncate: the file shrinks below what was read, its first line changes, or the bytes
  before the committed offset are not those read there (truncated and regrown past it
  between two looks, or, for a file closed by the LRU, replaced on the same inode); what
  was read is committed, then the file gets a new generation (a new identity, see
  :mod:`.identity`) and is read again from byte 0.
- deleted while open: like a rename (the open descriptor keeps the data): drained, closed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tailrace.logs import RateLimiter, event
from tailrace.plugins import InputPlugin

from .files import FileTable
from .followed import TailedFile
from .identity import fingerprint, has_end
from .options import TailOptions
from .reader import Reader

__all__ = ["Start", "TailInput", "TailOptions", "file_input"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Start:
    """Where a waiting file starts, as the agent's :class:`~.starting.Starter` placed it
    (from Redis or the local checkpoint); the input applies it (:meth:`TailInput.begin`)."""

    tf: TailedFile
    generation: int
    offset: int | None  # None: no stored offset (the head, or the end with from_end)
    from_end: bool
    replaced: bool = False  # other bytes than those read before its offset: counted
    note: str = ""  # how it was found, for the log line


class TailInput(InputPlugin):
    """Follows the files of its :class:`~.files.FileTable` (``table``) and cuts them into
    :class:`RawBatch` es (no I/O with the broker)."""

    name: ClassVar[str] = "tail"
    description: ClassVar[str] = (
        "Follow log files (plain, CRI, docker) by globs or regex, through rotation."
    )
    Options: ClassVar[type[TailOptions]] = TailOptions

    def __init__(self, options: TailOptions, *, agent: str, input_id: str, partitions: int,
                 base_dir: Path, counters: Callable[[str, int], None],
                 fd_budget: int | None = None) -> None:
        self.opts = options
        self.agent = agent
        self.input_id = input_id
        self.count = counters
        self.table = FileTable(options, agent=agent, input_id=input_id, partitions=partitions,
                               base_dir=base_dir, counters=counters, fd_budget=fd_budget,
                               plugin_name=self.name)
        self._limiter = RateLimiter()
        self.reader = Reader.for_options(options, counters, input_id)
        self.flush_s = self.reader.flush_s
        self._turn = 0
        self._sweep_at = 0.0

    # -- starting -------------------------------------------------------------------------
    def begin(self, starts: list[Start]) -> None:
        """Start reading the files the agent placed (see :class:`Start`)."""
        for s in starts:
            tf = s.tf
            if s.replaced:
                self.count("files_replaced", 1)
            self.start(tf, s.generation, s.offset, s.from_end)
            event(log, logging.INFO, "tail_file_opened",
                  f"following {tf.path}{s.note} from byte {tf.buf.pos} "
                  f"(generation {s.generation})",
                  input=self.input_id, partition=tf.partition, file=tf.identity)

    def start(self, tf: TailedFile, generation: int, offset: int | None,
              from_end: bool) -> None:
        """Set where ``tf`` resumes (see :func:`edge_agent.identity.resume_point`).

        ``offset`` ``None`` means no stored offset: the head, or the end of the file for
        files present at the very first start without ``read_from_head`` (``from_end``).
        """
        tf.ident.set_generation(generation)
        size = os.fstat(tf.fd).st_size
        if offset is None:
            offset = _last_line_end(tf.fd, size) if from_end and generation == 0 else 0
        tf.seek(offset, tf.crc_before(offset))
        tf.size = size
        tf.restart = None
        tf.started = True
        self.table.busy.add((tf.ident.fid.dev, tf.ident.fid.ino))

    # -- reading ----------------------------------------------------------------------------
    def poll(self, now: float, throttled: set[int]) -> list[TailedFile]:
        """Read up to a batch from each file with news, in turn; returns the files with a
        sealed batch. Never blocks (reads only what the files already hold)."""
        table = self.table
        busy = table.busy
        keys = self._to_look_at(now)
        ready: list[TailedFile] = []
        if not keys:
            return ready
        o = self.opts
        files = table.files
        turn = self._turn % len(keys)
        self._turn += 1
        budget = o.mem_buf_limit - sum(files[k].held_bytes for k in busy if k in files)
        read = self.reader.read
        for key in keys[turn:] + keys[:turn]:
            tf = files.get(key)
            if tf is None or tf.fd < 0 or not tf.started:
                continue
            sealed = tf.out.sealed
            if sealed is not None or tf.ident.partition in throttled:
                busy.add(key)
                if sealed is not None and tf.ident.partition not in throttled:
                    ready.append(tf)  # still waiting (backpressure or broker down): retry
                continue
            if tf.restart is None:
                self._stat(tf, now)
            more = False  # stopped by a limit while lines were still coming
            if tf.restart is None and budget > 0:
                b = tf.buf
                try:
                    while True:
                        n = read(tf, now)
                        more = n > 0
                        if not more:
                            break
                        tf.last_active = now  # it gave lines (or skipped bytes)
                        budget -= n
                        if (budget <= 0 or len(b.lines) >= o.batch_lines
                                or b.nbytes >= o.batch_bytes):
                            break
                except OSError as exc:
                    self._read_error(tf, exc)
            if ((more or budget <= 0) and tf.buf.lines) or self._should_seal(tf, now):
                self._seal(tf)
                ready.append(tf)
            elif tf.restart is not None:
                tf.started = False
                table.requeue([tf])
            elif tf.rotated_at is not None and now - tf.rotated_at >= o.rotate_wait_s:
                self._finish_rotated(tf, now)
                if files.get(key) is not tf:
                    continue  # drained and closed
            if tf.idle and tf.rotated_at is None:
                busy.discard(key)
            else:
                busy.add(key)
        if budget <= 0:  # memory is full: commit what is held rather than wait for more
            ready.extend(self._seal_held(throttled))
        if table.open_count > table.max_open:
            table.evict()
        return ready

    def _to_look_at(self, now: float) -> list[tuple[int, int]]:
        """The files this pass looks at: with inotify, those with news or work in progress
        (every file at least once per ``refresh_interval_s``); without it, every file."""
        table = self.table
        if not table.watched or now >= self._sweep_at or table.layout_changed:
            keys = list(table.files)
            self._sweep_at = now + self.opts.refresh_interval_s
            table.layout_changed = False
        else:
            keys = list(table.busy | table.dirty)
        table.dirty.clear()
        return keys

    def _seal_held(self, throttled: set[int]) -> list[TailedFile]:
        """Seal every partial batch a partition may take now (the memory budget is spent)."""
        sealed = []
        files = self.table.files
        for key in self.table.busy:
            tf = files.get(key)
            if (tf is not None and tf.buf.lines and tf.out.sealed is None
                    and tf.ident.partition not in throttled):
                self._seal(tf)
                sealed.append(tf)
        return sealed

    def _stat(self, tf: TailedFile, now: float) -> None:
        try:
            st = os.fstat(tf.fd)
        except OSError as exc:
            self._read_error(tf, exc)
            return
        tf.size = st.st_size
        scanned = tf.buf.scanned
        if st.st_size < scanned:
            self._restart(tf, "truncated", now)
            return
        if st.st_mtime_ns != tf.mtime_ns:
            tf.mtime_ns = st.st_mtime_ns
            if scanned:
                try:  # truncated and regrown in place (copytruncate) with a new first line?
                    fid = fingerprint(tf.fd, st)
                except OSError:
                    fid = None
                if fid is not None and fid.crc != tf.ident.fid.crc:
                    self._restart(tf, "rewritten", now)
                    return
                if not has_end(tf.fd, tf.out.committed, tf.out.end_crc):  # same first line
                    self._restart(tf, "replaced", now)
                    return
        if st.st_nlink == 0 and tf.rotated_at is None:
            self.table.rotated(tf, now)  # deleted while open

    def _restart(self, tf: TailedFile, why: str, now: float) -> None:
        """Truncated, rewritten (another first line) or replaced (other bytes before the
        committed offset): commit what was read, then a new identity from byte 0."""
        if tf.restart is not None:
            return
        self.reader.flush(tf, "truncated", now)
        tf.restart = why
        self.count(f"files_{why}", 1)
        event(log, logging.WARNING, "tail_file_truncated",
              f"{tf.path} was {why} (size {tf.size}, read up to {tf.buf.scanned}): "
              "copytruncate? "
              "It gets a new identity and is read again from its start",
              input=self.input_id, file=tf.identity)

    def _finish_rotated(self, tf: TailedFile, now: float) -> None:
        """Rotated and quiet for rotate_wait_s: emit a last line without newline, close."""
        if not tf.settled:
            return
        if tf.buf.scanned >= tf.size:
            self.table.forget(tf, "drained after rotation")
            return
        if now - tf.last_active < self.opts.rotate_wait_s:
            return
        pos = tf.buf.pos
        try:
            self.reader.read_last_line(tf, now)
        except OSError as exc:
            self._read_error(tf, exc)
        if tf.buf.pos != pos:
            tf.last_active = now

    def _read_error(self, tf: TailedFile, exc: OSError) -> None:
        self.count("read_errors", 1)
        if self._limiter.allow(f"read-{tf.path}"):
            event(log, logging.ERROR, "tail_file_read_error",
                  f"cannot read {tf.path} at byte {tf.buf.scanned}: {exc.strerror}; retrying",
                  input=self.input_id, partition=tf.partition, file=tf.identity)

    def next_deadline(self, now: float) -> float:
        """The earliest time something is due: a batch to seal, a flush, a scan."""
        wait = self.opts.batch_wait_ms / 1000
        table = self.table
        due = min(table.next_scan, self._sweep_at if table.watched else table.next_scan)
        for key in table.busy:
            tf = table.files.get(key)
            if tf is None:
                continue
            b = tf.buf
            if b.lines:
                due = min(due, b.batch_at + wait)
            if b.carry:
                due = min(due, b.carry_at + self.flush_s)
            if tf.rotated_at is not None:
                due = min(due, max(tf.rotated_at, tf.last_active) + self.opts.rotate_wait_s)
        return due

    def _should_seal(self, tf: TailedFile, now: float) -> bool:
        b = tf.buf
        if b.lines:
            o = self.opts
            return (len(b.lines) >= o.batch_lines or b.nbytes >= o.batch_bytes
                    or now - b.batch_at >= o.batch_wait_ms / 1000 or tf.restart is not None)
        return b.pos != tf.out.committed  # only skipped bytes: move the offset anyway

    def close(self) -> None:
        """Close every file (the agent's end)."""
        self.table.close()

    def seal_all(self) -> list[TailedFile]:
        """On shutdown: flush pending messages and seal every partial batch."""
        ready = []
        now = time.monotonic()
        for tf in self.table.files.values():
            if tf.fd < 0 or not tf.started:
                continue
            if tf.out.sealed is None:
                self.reader.flush(tf, "shutdown", now)
                if tf.buf.lines or tf.buf.pos != tf.out.committed:
                    self._seal(tf)
            if tf.out.sealed is not None:
                ready.append(tf)
        return ready

    def _seal(self, tf: TailedFile) -> None:
        batch = tf.take_batch(self.agent, self.input_id)
        tf.out.seal(batch, tf.crc_before(batch.end))  # just read: the bytes of its end


def _last_line_end(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size`` (start tailing at a line start)."""
    pos = size
    while pos > 0:
        step = min(65536, pos)
        chunk = os.pread(fd, step, pos - step)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return pos - step + nl + 1
        pos -= step
    return 0


def file_input(plugin: InputPlugin) -> TailInput:
    """``plugin`` as what the agent drives: a file input (the only kind it runs).

    Raises:
        TypeError: the input plugin is not built on :class:`TailInput`.
    """
    if not isinstance(plugin, TailInput):
        cls = type(plugin)
        raise TypeError(f"input plugin {cls.name!r} ({cls.__module__}.{cls.__qualname__}) is "
                        "not a file input: the agent runs inputs built on "
                        "edge_agent.tail.TailInput only")
    return plugin

"""The ``tail`` input: follows files through rotation and truncation, in batches of messages.

This module owns the table of followed files: discovering them (:mod:`.discovery`),
opening and fingerprinting them (:mod:`.identity`), noticing rotation, deletion and
truncation, closing idle ones when descriptors run short (LRU) and reading them fairly
(:mod:`.reader`). It never talks to Redis: the agent loop (:mod:`edge_agent.agent`) sets
where each file starts (:meth:`TailInput.start`), commits the sealed batches and reports
back (:meth:`TailInput.on_committed`, :meth:`TailInput.on_conflict`).

What happens on each kind of rotation:

- rename + create: the renamed file keeps its identity (device, inode, first-line
  checksum); it is read to its end and closed once drained and ``rotate_wait_s`` passed.
  The new file at the path is a new identity, read from its start.
- copytruncate: the file shrinks below what was read; what was read is committed, then
  the file gets a new generation (a new identity, see :mod:`.identity`) and is read from 0.
- deleted while open: like a rename (the open descriptor keeps the data): drained, closed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from tailrace.logs import RateLimiter, event
from tailrace.wire import RawBatch

from .discovery import Discovery
from .formats import make_decoder
from .identity import fingerprint, partition_for
from .inotify import CHANGES_FILES, IN_MODIFY, FsEvent
from .multiline import MultilineRule
from .options import TailOptions
from .reader import Reader, TailedFile

__all__ = ["TailInput", "TailOptions", "TailedFile"]

log = logging.getLogger(__name__)

MIN_SCAN_GAP_S = 0.05  # inotify events never make scans more frequent than this


class TailInput:
    """Follows files and cuts them into :class:`RawBatch` es (no I/O with the broker)."""

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
        self.partitions = partitions
        self.count = counters
        self.discovery = Discovery(options, base_dir=base_dir, host=agent, input_id=input_id,
                                   plugin_name=self.name)
        rule = MultilineRule.build(options.multiline) if options.multiline else None
        self.flush_s = rule.flush_s if rule else options.partial_flush_ms / 1000
        self.reader = Reader(options, make_decoder(options.format, rule),
                             options.format != "plain", self.flush_s,
                             max(options.max_line_bytes, rule.max_bytes if rule else 0),
                             counters, input_id)
        self.files: dict[tuple[int, int], TailedFile] = {}
        self.by_path: dict[str, tuple[int, int]] = {}
        self.max_open = max(1, min(options.max_open_files, fd_budget or options.max_open_files))
        self.open_count = 0
        self.first_scan = True
        self.next_scan = 0.0
        self.last_scan = 0.0
        self.scans = 0
        self._waiting: list[TailedFile] = []
        self._turn = 0
        self._limiter = RateLimiter()

    # -- discovery ------------------------------------------------------------------------
    def due_scan(self, now: float) -> bool:
        return now >= self.next_scan

    def scan(self, now: float) -> bool:
        """Look for new, grown, renamed and vanished files; returns whether it was the first.

        New files wait for :meth:`start` (see :meth:`take_waiting`). A followed file whose
        path now names another file or nothing was rotated or deleted: it is drained and
        closed after ``rotate_wait_s``.
        """
        self.next_scan = now + self.opts.refresh_interval_s
        self.last_scan = now
        self.scans += 1
        first, self.first_scan = self.first_scan, False
        wall = time.time()
        seen: dict[str, tuple[int, int]] = {}
        path_of: dict[tuple[int, int], str] = {}
        for path, st in self.discovery.scan():
            key = (st.st_dev, st.st_ino)
            seen[path] = key
            path_of.setdefault(key, path)
            tf = self.files.get(key)
            if tf is None:
                older = self.opts.ignore_older_s
                if older is None or wall - st.st_mtime <= older:
                    self._open(path, st, now, initial=first)
            elif tf.fd < 0 and (st.st_mtime_ns != tf.mtime_ns or st.st_size != tf.size):
                self._reopen(tf, path, now)
        for path, key in self.by_path.items():
            if seen.get(path) == key:
                continue
            tf = self.files.get(key)
            if tf is None or tf.path != path:
                continue
            if key in path_of:  # renamed to another name we follow: just a new name
                tf.path = path_of[key]
            elif tf.fd >= 0:
                self._rotated(tf, now)
            elif not self._find_renamed(tf, now):
                self._forget(tf, "gone while closed (fully read)")
        self.by_path = seen
        self._evict()
        return first

    def on_events(self, events: Iterable[FsEvent], now: float) -> None:
        """inotify news: re-scan soon when files appeared, left, or a closed one grew."""
        for ev in events:
            if ev.mask & CHANGES_FILES:
                break
            if ev.mask & IN_MODIFY:
                key = self.by_path.get(ev.path)
                tf = self.files.get(key) if key else None
                if tf is None or tf.fd < 0:
                    break
        else:
            return
        self.next_scan = min(self.next_scan, self.last_scan + MIN_SCAN_GAP_S)

    def watch_dirs(self) -> set[str]:
        """Folders to watch: where files may appear, and where followed files live."""
        dirs = self.discovery.watch_dirs()
        for tf in self.files.values():
            dirs.add(os.path.dirname(tf.path))
            dirs.add(os.path.dirname(os.path.realpath(tf.path)))
        return dirs

    def _open(self, path: str, st: os.stat_result, now: float,
              initial: bool = False) -> TailedFile | None:
        if self.open_count >= self.max_open and not self._evict(need=1):
            return None  # every descriptor is busy: found again on the next scan
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if self._limiter.allow(f"open-{path}"):
                event(log, logging.WARNING, "tail_file_open_error",
                      f"cannot open {path}: {exc.strerror}; check its permissions (retried "
                      "every refresh_interval_s)", input=self.input_id)
            return None
        try:
            fst = os.fstat(fd)
            fid = fingerprint(fd, fst)
        except OSError:
            fid = None
        if fid is None or (fid.dev, fid.ino) != (st.st_dev, st.st_ino):
            os.close(fd)  # first line incomplete (or replaced meanwhile): try next scan
            return None
        desc = self.discovery.describe(path)
        tf = TailedFile(path, fd, fid, self.agent, 0, desc.tag, desc.meta)
        tf.partition = partition_for(tf.base, self.partitions)
        tf.size, tf.mtime_ns, tf.last_active = fst.st_size, fst.st_mtime_ns, now
        tf.initial = initial
        tf.folder = os.path.dirname(os.path.realpath(path))
        self.files[(fid.dev, fid.ino)] = tf
        self.open_count += 1
        self._waiting.append(tf)
        return tf

    def _reopen(self, tf: TailedFile, path: str, now: float, force: bool = False) -> bool:
        """Reopen a dormant file that changed; False when it is not the same file anymore.

        ``force`` opens it even over ``max_open_files`` (a renamed file must be drained).
        """
        if self.open_count >= self.max_open and not self._evict(need=1) and not force:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
        except OSError:
            return False
        try:
            fid = fingerprint(fd, st)
        except OSError:
            fid = None
        if fid != tf.fid:
            os.close(fd)  # the inode was reused by another file: the old one is gone
            self._forget(tf, "replaced by another file while closed")
            self._open(path, st, now)
            return False
        tf.fd, tf.path, tf.last_active = fd, path, now
        self.open_count += 1
        return True

    def _find_renamed(self, tf: TailedFile, now: float) -> bool:
        """A dormant file left its path: find it by inode in its folder to drain it."""
        try:
            entries = list(os.scandir(tf.folder))
        except OSError:
            return False
        for entry in entries:
            try:
                if entry.inode() != tf.fid.ino or entry.is_symlink():
                    continue
                st = entry.stat()
            except OSError:
                continue
            if (st.st_dev == tf.fid.dev and st.st_size > tf.size
                    and self._reopen(tf, entry.path, now, force=True)):
                self._rotated(tf, now)
                return True
        return False

    def _rotated(self, tf: TailedFile, now: float) -> None:
        if tf.rotated_at is None:
            tf.rotated_at = now
            event(log, logging.INFO, "tail_file_rotated",
                  f"{tf.path} was rotated or deleted; reading it to its end (at byte "
                  f"{tf.scanned} of {tf.size})", input=self.input_id, file=tf.identity)

    def _restart(self, tf: TailedFile, why: str, now: float) -> None:
        """Truncated or rewritten: commit what was read, then a new identity from byte 0."""
        if tf.restart is not None:
            return
        self.reader.flush(tf, "truncated", now)
        tf.restart = why
        self.count(f"files_{why}", 1)
        event(log, logging.WARNING, "tail_file_truncated",
              f"{tf.path} was {why} (size {tf.size}, read up to {tf.scanned}): copytruncate? "
              "It gets a new identity and is read again from its start",
              input=self.input_id, file=tf.identity)

    def _evict(self, need: int = 0) -> bool:
        """Close least recently active idle files until ``need`` descriptors are free."""
        excess = self.open_count + need - self.max_open
        if excess <= 0:
            return True
        idle = [tf for tf in self.files.values()
                if tf.fd >= 0 and tf.started and tf.rotated_at is None and tf.idle]
        idle.sort(key=lambda tf: tf.last_active)
        for tf in idle[: max(excess, self.max_open // 10) if need else excess]:
            self._close_fd(tf)
            self.count("files_closed_idle", 1)
        return self.open_count + need <= self.max_open

    def _close_fd(self, tf: TailedFile) -> None:
        if tf.fd >= 0:
            try:
                st = os.fstat(tf.fd)
                tf.mtime_ns = st.st_mtime_ns  # a later change of either reopens it
                tf.size = st.st_size
                os.close(tf.fd)
            except OSError:
                pass
            tf.fd = -1
            self.open_count -= 1

    def _forget(self, tf: TailedFile, why: str) -> None:
        self._close_fd(tf)
        key = (tf.fid.dev, tf.fid.ino)
        if self.files.get(key) is tf:
            del self.files[key]
        if self.by_path.get(tf.path) == key:
            del self.by_path[tf.path]
        event(log, logging.DEBUG, "tail_file_closed", f"{tf.path}: {why}", input=self.input_id)

    # -- starting -----------------------------------------------------------------------------
    def take_waiting(self) -> list[TailedFile]:
        """Files that need a start offset: new, or with a new identity after truncation."""
        waiting = [tf for tf in self._waiting if tf.fd >= 0 and not tf.started
                   and self.files.get((tf.fid.dev, tf.fid.ino)) is tf]
        self._waiting.clear()
        return waiting

    def start(self, tf: TailedFile, generation: int, offset: int | None,
              from_end: bool) -> None:
        """Set where ``tf`` resumes (see :func:`edge_agent.identity.resume_point`).

        ``offset`` ``None`` means no stored offset: the head, or the end of the file for
        files present at the very first start without ``read_from_head`` (``from_end``).
        """
        tf.set_generation(generation)
        size = os.fstat(tf.fd).st_size
        if offset is None:
            offset = _last_line_end(tf.fd, size) if from_end and generation == 0 else 0
        tf.seek(offset)
        tf.size = size
        tf.restart = None
        tf.started = True

    def size_of(self, tf: TailedFile) -> int:
        """The current size of an open file (raises OSError)."""
        return os.fstat(tf.fd).st_size

    def requeue(self, files: list[TailedFile]) -> None:
        """Files whose start failed (broker down) wait for the next attempt."""
        self._waiting.extend(files)

    def rekey(self, tf: TailedFile) -> None:
        """Before re-starting a rewritten file: its identity follows its new first line."""
        try:
            fid = fingerprint(tf.fd, os.fstat(tf.fd))
        except OSError:
            fid = None
        if fid is not None and fid != tf.fid:
            tf.fid = fid
            tf.base = fid.key(self.agent)
            tf.partition = partition_for(tf.base, self.partitions)

    # -- reading ----------------------------------------------------------------------------
    def poll(self, now: float, throttled: set[int]) -> list[TailedFile]:
        """Read up to a batch from every file, in turn; returns files with a sealed batch."""
        ready: list[TailedFile] = []
        files = list(self.files.values())
        if not files:
            return ready
        o = self.opts
        turn = self._turn % len(files)
        self._turn += 1
        budget = o.mem_buf_limit - sum(tf.held_bytes for tf in files)
        read = self.reader.read
        for tf in files[turn:] + files[:turn]:
            if tf.fd < 0 or not tf.started:
                continue
            if tf.partition in throttled:
                continue
            if tf.sealed is not None:
                ready.append(tf)  # still waiting (backpressure or broker down): retry
                continue
            if tf.restart is None:
                self._stat(tf, now)
            if tf.restart is None and budget > 0:
                try:
                    while True:
                        n = read(tf, now)
                        budget -= n
                        if (not n or budget <= 0 or len(tf.lines) >= o.batch_lines
                                or tf.nbytes >= o.batch_bytes):
                            break
                except OSError as exc:
                    self._read_error(tf, exc)
            if self._should_seal(tf, now):
                self._seal(tf)
                ready.append(tf)
            elif tf.restart is not None:
                tf.started = False
                self._waiting.append(tf)
            elif tf.rotated_at is not None and now - tf.rotated_at >= o.rotate_wait_s:
                self._finish_rotated(tf, now)
        if self.open_count > self.max_open:
            self._evict()
        return ready

    def _stat(self, tf: TailedFile, now: float) -> None:
        try:
            st = os.fstat(tf.fd)
        except OSError as exc:
            self._read_error(tf, exc)
            return
        tf.size = st.st_size
        if st.st_size < tf.scanned:
            self._restart(tf, "truncated", now)
            return
        if st.st_mtime_ns != tf.mtime_ns:
            tf.mtime_ns = st.st_mtime_ns
            if tf.scanned:
                try:  # truncated and regrown in place (copytruncate) with a new first line?
                    fid = fingerprint(tf.fd, st)
                except OSError:
                    fid = None
                if fid is not None and fid.crc != tf.fid.crc:
                    self._restart(tf, "rewritten", now)
                    return
        if st.st_nlink == 0 and tf.rotated_at is None:
            self._rotated(tf, now)  # deleted while open

    def _finish_rotated(self, tf: TailedFile, now: float) -> None:
        """Rotated and quiet for rotate_wait_s: emit a last line without newline, close."""
        if tf.idle:
            self._forget(tf, "drained after rotation")
            return
        if tf.carry or tf.lines or tf.pos != tf.committed or tf.scanned >= tf.size:
            return
        if now - tf.last_active < self.opts.rotate_wait_s:
            return
        try:
            tail = os.pread(tf.fd, min(tf.size - tf.scanned, self.reader.max_line), tf.scanned)
        except OSError as exc:
            self._read_error(tf, exc)
            return
        if tail and b"\n" not in tail:
            tf.last_active = now
            d = self.reader.decode(tail + b"\n", tf.pos, True)
            self.reader.append(tf, d, len(tail), now)
            tf.scanned = tf.pos

    def _read_error(self, tf: TailedFile, exc: OSError) -> None:
        self.count("read_errors", 1)
        if self._limiter.allow(f"read-{tf.path}"):
            event(log, logging.ERROR, "tail_file_read_error",
                  f"cannot read {tf.path} at byte {tf.scanned}: {exc.strerror}; retrying",
                  input=self.input_id, partition=tf.partition, file=tf.identity)

    def next_deadline(self, now: float) -> float:
        """The earliest time something is due: a batch to seal, a flush, a scan."""
        wait = self.opts.batch_wait_ms / 1000
        due = self.next_scan
        for tf in self.files.values():
            if tf.lines:
                due = min(due, tf.batch_at + wait)
            if tf.carry:
                due = min(due, tf.carry_at + self.flush_s)
            if tf.rotated_at is not None:
                due = min(due, max(tf.rotated_at, tf.last_active) + self.opts.rotate_wait_s)
        return due

    def _should_seal(self, tf: TailedFile, now: float) -> bool:
        if tf.lines:
            o = self.opts
            return (len(tf.lines) >= o.batch_lines or tf.nbytes >= o.batch_bytes
                    or now - tf.batch_at >= o.batch_wait_ms / 1000 or tf.restart is not None)
        return tf.pos != tf.committed  # only skipped bytes: move the offset anyway

    def seal_all(self) -> list[TailedFile]:
        """On shutdown: flush pending messages and seal every partial batch."""
        ready = []
        for tf in self.files.values():
            if tf.fd < 0 or not tf.started:
                continue
            if tf.sealed is None:
                self.reader.flush(tf, "shutdown", time.monotonic())
                if tf.lines or tf.pos != tf.committed:
                    self._seal(tf)
            if tf.sealed is not None:
                ready.append(tf)
        return ready

    def _seal(self, tf: TailedFile) -> None:
        tf.sealed = RawBatch(
            agent=self.agent, input=self.input_id, tag=tf.tag, path=tf.path, file=tf.identity,
            start=tf.committed, end=tf.pos, lines=tf.lines, offsets=tf.offsets,
            times=tf.times, streams=tf.streams, meta=tf.meta,
        )
        tf.lines, tf.offsets, tf.times, tf.streams, tf.nbytes = [], [], None, None, 0

    # -- commit feedback ----------------------------------------------------------------------
    def on_committed(self, tf: TailedFile) -> RawBatch:
        batch = tf.sealed
        assert batch is not None
        tf.sealed = None
        tf.committed = batch.end
        return batch

    def on_conflict(self, tf: TailedFile, stored: int) -> None:
        """Redis holds another offset for this file: it wins; drop what is buffered."""
        tf.seek(stored)

    # -- state --------------------------------------------------------------------------------
    def file_states(self) -> list[dict[str, Any]]:
        """Per-file state for status: path, identity, partition, offset, size, behind."""
        out = []
        for tf in self.files.values():
            if tf.rotated_at is not None:
                state = "rotated"
            elif tf.fd < 0:
                state = "closed"
            elif tf.restart is not None or not tf.started:
                state = "starting"
            else:
                state = "reading" if tf.size > tf.committed else "idle"
            out.append({"path": tf.path, "file": tf.identity, "partition": tf.partition,
                        "offset": tf.committed, "size": tf.size,
                        "behind": max(0, tf.size - tf.committed), "state": state})
        return out

    def close(self) -> None:
        for tf in list(self.files.values()):
            self._close_fd(tf)


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


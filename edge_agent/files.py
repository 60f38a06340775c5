"""The table of followed files: discovery, opening, rotation, deletion, descriptor LRU.

:class:`FileTable` knows which files an input follows and in which state each is; it
opens them (fingerprinting each, see :mod:`.identity`), notices when a path names another
file (rename + create rotation) or none (deletion), closes idle files when descriptors run
short (least recently active first) and reopens them when they grow. It never reads
contents beyond the fingerprint and never talks to Redis. Each
:class:`edge_agent.tail.TailInput` holds one (``TailInput.table``): the agent drives the
table (scans, inotify events, files waiting for a start, retired files) and the input reads
the table's files.

With inotify (:mod:`.inotify`) the table also knows which files changed since the last
pass (``dirty``); only those and the files with work in progress (``busy``) are looked at,
plus every file once per ``refresh_interval_s``, so 1,000 quiet files cost nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tailrace.logs import RateLimiter, event

from .discovery import Discovery
from .followed import FileIdentity, TailedFile
from .identity import fingerprint
from .inotify import CHANGES_FILES, IN_MODIFY, FsEvent
from .options import TailOptions

__all__ = ["FileTable", "Key"]

log = logging.getLogger(__name__)

MIN_SCAN_GAP_S = 0.05  # inotify events never make scans more frequent than this

Key = tuple[int, int]  # (device, inode)


class FileTable:
    """The files of one input and their life cycle (no reading, no broker)."""

    def __init__(self, options: TailOptions, *, agent: str, input_id: str, partitions: int,
                 base_dir: Path, counters: Callable[[str, int], None],
                 fd_budget: int | None = None, plugin_name: str = "tail") -> None:
        self.opts = options
        self.agent = agent
        self.input_id = input_id
        self.partitions = partitions
        self.count = counters
        self.discovery = Discovery(options, base_dir=base_dir, host=agent, input_id=input_id,
                                   plugin_name=plugin_name)
        self.files: dict[Key, TailedFile] = {}
        self.by_path: dict[str, Key] = {}
        self.by_real: dict[str, Key] = {}  # symlink targets, for inotify events
        self.max_open = max(1, min(options.max_open_files, fd_budget or options.max_open_files))
        self.open_count = 0
        self.first_scan = True
        self.next_scan = 0.0
        self.last_scan = 0.0
        self.scans = 0
        self.watched = False  # inotify covers every folder: look only at changed files
        self.layout_changed = True  # files opened in folders maybe not watched yet
        self.busy: set[Key] = set()  # files with work in progress
        self.dirty: set[Key] = set()  # files inotify says changed since the last pass
        self._waiting: list[TailedFile] = []
        self.retired: list[TailedFile] = []  # deleted files closed (see take_retired)
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
                self.rotated(tf, now)
            elif not self._find_renamed(tf, now):
                self.forget(tf, "gone while closed (fully read)")
        self.by_path = seen
        self.evict()
        return first

    def on_events(self, events: Iterable[FsEvent], now: float) -> None:
        """inotify news: mark changed files; re-scan soon when files appeared, left, or a
        closed one grew."""
        rescan = False
        for ev in events:
            key = self.by_real.get(ev.path) or self.by_path.get(ev.path)
            tf = self.files.get(key) if key else None
            if tf is not None and key is not None:
                self.dirty.add(key)
            if ev.mask & CHANGES_FILES or (ev.mask & IN_MODIFY and (tf is None or tf.fd < 0)):
                rescan = True
        if rescan:
            self.next_scan = min(self.next_scan, self.last_scan + MIN_SCAN_GAP_S)

    def rescan_all(self, now: float) -> None:
        """After lost inotify events: re-scan and look at every file on the next pass."""
        self.next_scan = now
        self.layout_changed = True

    def watch_dirs(self) -> set[str]:
        """Folders to watch: where files may appear, and where followed files live."""
        dirs = self.discovery.watch_dirs()
        for tf in self.files.values():
            dirs.add(os.path.dirname(tf.path))
            dirs.add(os.path.dirname(os.path.realpath(tf.path)))
        return dirs

    def _open(self, path: str, st: os.stat_result, now: float,
              initial: bool = False) -> TailedFile | None:
        if self.open_count >= self.max_open and not self.evict(need=1):
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
        real = os.path.realpath(path)
        tf = TailedFile(path, fd, FileIdentity(fid, self.agent, self.partitions), desc.tag,
                        desc.meta, real=real, size=fst.st_size, mtime_ns=fst.st_mtime_ns,
                        now=now, initial=initial)
        key = (fid.dev, fid.ino)
        if real != path:
            self.by_real[real] = key
        self.layout_changed = True
        self.files[key] = tf
        self.open_count += 1
        self._waiting.append(tf)
        return tf

    def _reopen(self, tf: TailedFile, path: str, now: float, force: bool = False) -> bool:
        """Reopen a dormant file that changed; False when it is not the same file anymore.

        ``force`` opens it even over ``max_open_files`` (a renamed file must be drained).
        """
        if self.open_count >= self.max_open and not self.evict(need=1) and not force:
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
        if fid != tf.ident.fid:
            os.close(fd)  # the inode was reused by another file: the old one is gone
            self.forget(tf, "replaced by another file while closed")
            self._open(path, st, now)
            return False
        tf.fd, tf.path, tf.last_active = fd, path, now
        self.open_count += 1
        self.busy.add((tf.ident.fid.dev, tf.ident.fid.ino))
        return True

    def _find_renamed(self, tf: TailedFile, now: float) -> bool:
        """A dormant file left its path: find it by inode in its folder to drain it."""
        try:
            entries = list(os.scandir(tf.folder))
        except OSError:
            return False
        for entry in entries:
            try:
                if entry.inode() != tf.ident.fid.ino or entry.is_symlink():
                    continue
                st = entry.stat()
            except OSError:
                continue
            if (st.st_dev == tf.ident.fid.dev and st.st_size > tf.size
                    and self._reopen(tf, entry.path, now, force=True)):
                self.rotated(tf, now)
                return True
        return False

    def rotated(self, tf: TailedFile, now: float) -> None:
        if tf.rotated_at is None:
            tf.rotated_at = now
            event(log, logging.INFO, "tail_file_rotated",
                  f"{tf.path} was rotated or deleted; reading it to its end (at byte "
                  f"{tf.buf.scanned} of {tf.size})", input=self.input_id, file=tf.identity)

    def evict(self, need: int = 0) -> bool:
        """Close least recently active idle files until ``need`` descriptors are free."""
        excess = self.open_count + need - self.max_open
        if excess <= 0:
            return True
        idle = [tf for tf in self.files.values()
                if tf.fd >= 0 and tf.started and tf.rotated_at is None and tf.idle]
        idle.sort(key=lambda tf: tf.last_active)
        quota = max(excess, self.max_open // 10) if need else excess
        for tf in idle:
            if quota <= 0:
                break
            try:
                st = os.fstat(tf.fd)
            except OSError:
                continue
            if st.st_size != tf.size or st.st_mtime_ns != tf.mtime_ns:
                self.dirty.add((tf.ident.fid.dev, tf.ident.fid.ino))  # it has news: keep it open
                continue
            self._close_fd(tf)
            self.count("files_closed_idle", 1)
            quota -= 1
        return self.open_count + need <= self.max_open

    def _close_fd(self, tf: TailedFile) -> int | None:
        """Close the descriptor; returns the file's link count then (0: deleted)."""
        nlink = None
        if tf.fd >= 0:
            try:
                # size and mtime stay as last read: a scan that sees others reopens it
                nlink = os.fstat(tf.fd).st_nlink
                os.close(tf.fd)
            except OSError:
                pass
            tf.fd = -1
            self.open_count -= 1
        return nlink

    def forget(self, tf: TailedFile, why: str) -> None:
        if self._close_fd(tf) == 0 and tf.started and not tf.ident.adopted:
            self.retired.append(tf)  # deleted: its inode may come back with a new file
        key = (tf.ident.fid.dev, tf.ident.fid.ino)
        if self.files.get(key) is tf:
            del self.files[key]
            self.busy.discard(key)
            self.dirty.discard(key)
        if self.by_path.get(tf.path) == key:
            del self.by_path[tf.path]
        for real in [r for r, k in self.by_real.items() if k == key]:
            del self.by_real[real]
        event(log, logging.DEBUG, "tail_file_closed", f"{tf.path}: {why}", input=self.input_id)

    # -- starting -----------------------------------------------------------------------------
    def waiting_files(self) -> list[TailedFile]:
        """The files waiting for their start (not taken: see :meth:`take_waiting`)."""
        return [tf for tf in self._waiting if tf.fd >= 0 and not tf.started]

    def adopt(self, tf: TailedFile, now: float) -> bool:
        """Follow a rotated sibling found at start-up (:mod:`.recovery`): read it from its
        start offset to its end, then close it (as a file rotated while followed).

        Returns False (and closes it) when the descriptor budget is spent: it stays on disk
        and is reported as not recovered.
        """
        key = (tf.ident.fid.dev, tf.ident.fid.ino)
        if key in self.files or (self.open_count >= self.max_open
                                 and not self.evict(need=1)):
            os.close(tf.fd)
            tf.fd = -1
            return False
        st = os.fstat(tf.fd)
        tf.size, tf.mtime_ns, tf.last_active, tf.rotated_at = st.st_size, st.st_mtime_ns, now, now
        self.files[key] = tf
        self.open_count += 1
        self.layout_changed = True
        self._waiting.append(tf)
        return True

    def drop_recovered(self, tf: TailedFile) -> None:
        """A recovery claim that did not hold (see :meth:`.Starter.resume`; counted in
        ``files_lost``): a sibling found by recovery is closed; a file the input follows
        anyway takes its own identity back."""
        self.count("files_lost", 1)
        if tf.rotated_at is not None:
            self.forget(tf, "not recovered")
            return
        tf.ident.reclaim()
        self._waiting.append(tf)

    def take_waiting(self) -> list[TailedFile]:
        """Files that need a start offset: new, or with a new identity after truncation (a
        rewritten one already under its new first line's identity)."""
        waiting = [tf for tf in self._waiting if tf.fd >= 0 and not tf.started
                   and self.files.get((tf.ident.fid.dev, tf.ident.fid.ino)) is tf]
        self._waiting.clear()
        for tf in waiting:
            if tf.restart == "rewritten":
                self.rekey(tf)
        return waiting

    def take_retired(self) -> list[TailedFile]:
        """Deleted files now closed: the agent moves their identity to a new generation, so
        a new file that reuses the inode with the same first line starts from byte 0."""
        retired, self.retired = self.retired, []
        return retired

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
        if fid is not None and fid != tf.ident.fid:
            tf.ident.rekey(fid)

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
                state = "reading" if tf.size > tf.out.committed else "idle"
            committed = tf.out.committed
            out.append({"path": tf.path, "file": tf.identity, "partition": tf.partition,
                        "offset": committed, "size": tf.size,
                        "behind": max(0, tf.size - committed), "state": state})
        return out

    def close(self) -> None:
        for tf in list(self.files.values()):
            self._close_fd(tf)

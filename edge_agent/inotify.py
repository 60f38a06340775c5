"""A small inotify watcher (Linux, through ctypes) that wakes the agent when files change.

It watches folders, not files: one watch covers every file in a folder, survives
rotation, and sees files appear (``IN_CREATE``, ``IN_MOVED_TO``), leave (``IN_DELETE``,
``IN_MOVED_FROM``) and grow (``IN_MODIFY``). Events only make the agent look sooner; the
periodic re-scan (``refresh_interval_s``) stays the source of truth, so a lost event
(queue overflow, a folder created between scans) costs latency, never data. Where inotify
is missing (not Linux, no libc, out of instances) :meth:`Watcher.create` returns ``None``
and the agent polls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import sys
from dataclasses import dataclass

from tailrace.logs import event

__all__ = ["FsEvent", "Watcher"]

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
              | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
# Events after which the set of files may have changed (a re-scan is due).
CHANGES_FILES = (IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
                 | IN_MOVE_SELF | IN_Q_OVERFLOW | IN_ATTRIB)
MAX_WATCHES = 4096
_HEADER = struct.Struct("iIII")
_READ_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class FsEvent:
    """One change: the folder, the file name in it ('' for the folder itself), the mask."""

    folder: str
    name: str
    mask: int

    @property
    def path(self) -> str:
        return os.path.join(self.folder, self.name) if self.name else self.folder


class Watcher:
    """inotify on a set of folders. Not thread-safe: one agent loop owns it."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self.fd = fd
        self._libc = libc
        self._by_wd: dict[int, str] = {}
        self._by_dir: dict[str, int] = {}
        self.overflowed = False
        self._warned = False

    @classmethod
    def create(cls) -> Watcher | None:
        """A watcher, or ``None`` where inotify is not available (then: poll)."""
        if not sys.platform.startswith("linux"):
            return None
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
            init = libc.inotify_init1
        except (OSError, AttributeError):
            return None
        fd = int(init(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            event(log, logging.WARNING, "tail_inotify_unavailable",
                  f"inotify_init1 failed ({os.strerror(err)}); polling files instead "
                  "(raise fs.inotify.max_user_instances to use inotify)")
            return None
        return cls(fd, libc)

    @property
    def folders(self) -> set[str]:
        return set(self._by_dir)

    def watch(self, folders: set[str]) -> bool:
        """Watch these folders too (already watched ones are left as they are).

        Returns:
            whether every folder is watched now (False: some must be polled).
        """
        complete = True
        for folder in folders:
            if folder in self._by_dir:
                continue
            if len(self._by_dir) >= MAX_WATCHES:
                if not self._warned:
                    self._warned = True
                    event(log, logging.WARNING, "tail_inotify_limit",
                          f"watching {MAX_WATCHES} folders already; others are polled every "
                          "refresh_interval_s")
                return False
            wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(folder), WATCH_MASK))
            if wd < 0:
                err = ctypes.get_errno()
                if err not in (errno.ENOENT, errno.ENOTDIR) and not self._warned:
                    self._warned = True
                    event(log, logging.WARNING, "tail_inotify_watch_error",
                          f"cannot watch {folder}: {os.strerror(err)}; it is polled instead "
                          "(raise fs.inotify.max_user_watches?)")
                if os.path.isdir(folder):
                    complete = False
                continue
            self._by_wd[wd] = folder
            self._by_dir[folder] = wd
        return complete

    def unwatch(self, folders: set[str]) -> None:
        for folder in folders:
            wd = self._by_dir.pop(folder, None)
            if wd is not None:
                self._by_wd.pop(wd, None)
                self._libc.inotify_rm_watch(self.fd, wd)

    def wait(self, timeout_s: float) -> bool:
        """Block until an event is readable or ``timeout_s`` passed; True when readable."""
        try:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
            return False
        return bool(ready)

    def read(self) -> list[FsEvent]:
        """Every queued event (never blocks). ``overflowed`` is set when some were lost."""
        events: list[FsEvent] = []
        while True:
            try:
                data = os.read(self.fd, _READ_BYTES)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not data:
                break
            i = 0
            while i + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, i)
                raw = data[i + _HEADER.size: i + _HEADER.size + length]
                i += _HEADER.size + length
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                    continue
                folder = self._by_wd.get(wd)
                if folder is None:
                    continue
                if mask & IN_IGNORED:  # the folder is gone (deleted or unmounted)
                    self._by_wd.pop(wd, None)
                    self._by_dir.pop(folder, None)
                name = os.fsdecode(raw.rstrip(b"\0"))
                events.append(FsEvent(folder, name, mask))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

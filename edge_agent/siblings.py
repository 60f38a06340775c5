"""Rotated siblings of a file: their names, and their bytes (a ``.gz`` through gzip).

Used by :mod:`.recovery` at start-up. A sibling is opened as it is, or, when it holds gzip
data (whatever its name: the kubelet compresses into ``.tmp`` first), decompressed into an
unlinked scratch file, so the reader, the fingerprint and the checks of the bytes before an
offset work on it as on any file.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .identity import FINGERPRINT_BYTES, FileId, fingerprint, head_checksum

__all__ = ["Sibling", "SiblingError", "is_rotation_of", "open_sibling", "rotation_keys",
           "written_since"]

GZIP_MAGIC = b"\x1f\x8b"
_OTHER_COMPRESSED = (".bz2", ".xz", ".zst", ".lz4", ".lzma", ".Z", ".zip")
_GZIP_CHUNK = 1 << 20


class SiblingError(Exception):
    """A sibling that cannot be looked at; the message says why (for the lost report)."""


@dataclass(slots=True)
class Sibling:
    """A sibling's bytes: its own descriptor, or a scratch copy of a ``.gz``."""

    path: str
    fd: int
    fid: FileId  # device and inode of the file on disk; checksum of its (decompressed) head
    size: int
    mtime: float  # of its content: a .gz's header keeps its source's (GNU gzip, logrotate)
    gz: bool


def is_rotation_of(name: str, original: str) -> bool:
    """Whether file name ``name`` is a rotated name of ``original`` (``app.log.1``,
    ``app.log.1.gz``, ``app.log-20240101``, ``0.log.20240101-120000``)."""
    return (len(name) > len(original) + 1 and name.startswith(original)
            and name[len(original)] in ".-_")


def rotation_keys(name: str) -> list[str]:
    """The names ``name`` may be a rotation of, and itself (``a.log.1`` -> ``a``,
    ``a.log``, ``a.log.1``): a name is looked up by these, never against every file."""
    return [name[:i] for i, c in enumerate(name) if c in ".-_" and i] + [name]


def open_sibling(path: str, st: os.stat_result, scratch: Path,
                 wanted: Callable[[int], bool]) -> Sibling | None:
    """The sibling's bytes, or ``None`` when it has no complete first line, or is gzip data
    whose first line's checksum is not ``wanted`` (it is then not decompressed).

    Raises:
        SiblingError: it cannot be opened or read, or is compressed by another tool.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SiblingError(f"cannot be opened: {exc.strerror}") from None
    try:
        gz = os.pread(fd, 2, 0) == GZIP_MAGIC
        if not gz and path.endswith(_OTHER_COMPRESSED):
            raise SiblingError("is compressed with another tool than gzip")
        fst = os.fstat(fd)
        fid = None if gz else fingerprint(fd, fst)
    except BaseException:
        os.close(fd)
        raise
    if fid is None:
        os.close(fd)
        return _gunzip(path, st, scratch, wanted) if gz else None
    return Sibling(path, fd, fid, fst.st_size, st.st_mtime, False)


def _gunzip(path: str, st: os.stat_result, scratch: Path,
            wanted: Callable[[int], bool]) -> Sibling | None:
    out = -1
    try:
        with gzip.open(path, "rb") as gz:
            head = gz.read(FINGERPRINT_BYTES)
            crc = head_checksum(head)
            if crc is None or not wanted(crc):
                return None
            scratch.mkdir(parents=True, exist_ok=True)
            out, name = tempfile.mkstemp(prefix="gunzip-", dir=scratch)
            os.unlink(name)  # gone with the descriptor, whatever happens to the agent
            _write_all(out, head)
            while chunk := gz.read(_GZIP_CHUNK):
                _write_all(out, chunk)
        return Sibling(path, out, FileId(st.st_dev, st.st_ino, crc), os.fstat(out).st_size,
                       gz.mtime or st.st_mtime, True)
    except (OSError, EOFError, zlib.error) as exc:
        if out >= 0:
            os.close(out)
        raise SiblingError(f"cannot be read through gzip: {exc}") from None


def written_since(sib: Sibling, fmt: str, since: float) -> bool:
    """Whether the sibling was written after ``since`` (the last save): its content's
    modification time, and for container logs also the time of its first line (a .gz made by
    the kubelet has a new mtime and no source time, but its lines keep theirs)."""
    if sib.mtime < since:
        return False
    if fmt == "plain":
        return True
    try:
        line = os.pread(sib.fd, FINGERPRINT_BYTES, 0).split(b"\n", 1)[0]
        stamp = (line.split(b" ", 1)[0].decode() if fmt == "cri"
                 else str(json.loads(line)["time"]))
        return datetime.fromisoformat(stamp).timestamp() >= since
    except (OSError, ValueError, KeyError, TypeError):
        return True  # no time to go by: the modification time says it


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

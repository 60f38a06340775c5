"""File identity: agent + device + inode + a checksum of the first line (+ a generation).

Never the path alone (rotation renames files) and never the inode alone (a deleted
file's inode is soon reused by a new file, which would then be skipped or misread). The
checksum covers the first line, or the first ``FINGERPRINT_BYTES`` when that line is
longer, so it never changes as the file grows; a file whose first line is not complete
yet has no identity and is not read (there is no complete line to read anyway).

A file truncated in place (copytruncate) and rewritten with the same first line keeps
device, inode and checksum, yet its offsets start again at 0: record ids derived from
(file, offset) would collide with the lines before the truncation. So every truncation
gives the file a new *generation*, part of its identity (``...:g2``). Generations are
stored in Redis (``tr:{pN}:gens``) and in the local checkpoint, so a restart finds them.
All generations of a file map to one partition, so its lines stay in order.

Device, inode and first line still cannot tell a file from another one that got its inode
and has the same first line (a file deleted while the agent was not looking and replaced at
once: ext4 hands the inode out again), nor from itself truncated and regrown past the
committed offset with the same first line. So every committed offset also keeps a checksum
of the bytes just before it (:func:`end_checksum`, in the local checkpoint and on the open
file): a file resumes at an offset only when those bytes are still there
(:func:`has_end`); else it gets the next generation and is read from byte 0.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass

__all__ = [
    "FINGERPRINT_BYTES",
    "FileId",
    "base_of",
    "end_checksum",
    "fingerprint",
    "generation_of",
    "has_end",
    "head_checksum",
    "identity_key",
    "parse_base",
    "partition_for",
    "resume_point",
]

FINGERPRINT_BYTES = 256
_GENERATION_RE = re.compile(r":g\d+$")


@dataclass(frozen=True, slots=True)
class FileId:
    """What identifies a file's content on this host, whatever its name."""

    dev: int
    ino: int
    crc: int

    def key(self, agent: str) -> str:
        """The base identity (generation 0) stored in Redis and carried in every batch."""
        return f"{agent}:{self.dev:x}:{self.ino:x}:{self.crc:08x}"


def identity_key(base: str, generation: int) -> str:
    """The identity of generation ``generation`` of the file whose base identity is ``base``.

    Generation 0 is the base itself, so files never truncated keep their first identity.
    """
    return base if generation == 0 else f"{base}:g{generation}"


def base_of(identity: str) -> str:
    """The base identity of any generation's identity (inverse of :func:`identity_key`)."""
    return _GENERATION_RE.sub("", identity)


def generation_of(identity: str) -> int:
    """The generation of any generation's identity (0 for a base identity)."""
    m = _GENERATION_RE.search(identity)
    return int(m[0][2:]) if m else 0


def resume_point(size: int, generation: int, committed: int | None, local: int | None,
                 truncated: bool) -> tuple[int, int | None]:
    """Where a file starts: ``(generation, offset)``; offset ``None`` = no stored offset.

    Args:
        size: the file's size now.
        generation: its current generation (the highest stored in Redis or locally).
        committed: Redis's offset for that generation (authoritative), if any.
        local: the local checkpoint's offset for it, if any.
        truncated: the agent knows the content is not what was read under this identity
            (it shrank, or other bytes precede the offset): the next generation, from 0.

    A stored offset past the end means the file was truncated while nobody watched: the
    next generation, from byte 0. A generation above 0 without an offset starts at 0.
    """
    if truncated:
        return generation + 1, 0
    offset = committed if committed is not None else local
    if offset is not None and offset > size:
        return generation + 1, 0
    if offset is None and generation > 0:
        return generation, 0
    return generation, offset


def parse_base(base: str) -> FileId | None:
    """Device, inode and first-line checksum of a base identity (inverse of
    :meth:`FileId.key`), or ``None`` when it is not one."""
    parts = base.rsplit(":", 3)
    if len(parts) != 4:
        return None
    try:
        return FileId(int(parts[1], 16), int(parts[2], 16), int(parts[3], 16))
    except ValueError:
        return None


def head_checksum(head: bytes, whole: bool = False) -> int | None:
    """The checksum of a file's first line from its first ``FINGERPRINT_BYTES`` (or
    fewer, at its end); ``None`` until that line is complete. ``whole``: ``head`` is the
    whole file, complete (a backfilled one): a single line without newline is its first."""
    head = head[:FINGERPRINT_BYTES]
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < FINGERPRINT_BYTES and not (whole and head):
        return None
    return zlib.crc32(head)


def fingerprint(fd: int, st: os.stat_result) -> FileId | None:
    """The identity of an open file, or ``None`` until its first line is complete.

    Raises:
        OSError: the file cannot be read.
    """
    crc = head_checksum(os.pread(fd, FINGERPRINT_BYTES, 0))
    return None if crc is None else FileId(st.st_dev, st.st_ino, crc)


def end_checksum(fd: int, offset: int) -> int | None:
    """Checksum of the bytes just before ``offset`` (``FINGERPRINT_BYTES`` at most), what
    a committed offset is checked against; ``None`` when the file is shorter than that.

    Raises:
        OSError: the file cannot be read.
    """
    n = min(offset, FINGERPRINT_BYTES)
    data = os.pread(fd, n, offset - n) if n else b""
    return zlib.crc32(data) if len(data) == n else None


def has_end(fd: int, offset: int, crc: int | None) -> bool:
    """Whether the open file still holds, just before ``offset``, the bytes whose checksum
    was ``crc`` when it was read there: False means another content (truncated and regrown,
    or another file on a reused inode with the same first line). An unknown ``crc`` or an
    unreadable file cannot tell: True (the offset is trusted, as without the check).
    """
    if crc is None:
        return True
    try:
        return end_checksum(fd, offset) == crc
    except OSError:
        return True


def partition_for(base: str, partitions: int) -> int:
    """A stable partition for a file (by its base identity, so every generation agrees)."""
    return zlib.crc32(base.encode()) % partitions

"""File identity: agent + device + inode + a checksum of the file's first line.

Never the path alone (rotation renames files) and never the inode alone (a deleted
file's inode is soon reused by a new file, which would then be skipped or misread). The
checksum covers the first line, or the first ``FINGERPRINT_BYTES`` when that line is
longer, so it never changes as the file grows; a file whose first line is not complete
yet has no identity and is not read (there is no complete line to read anyway).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

__all__ = ["FINGERPRINT_BYTES", "FileId", "fingerprint", "partition_for"]

FINGERPRINT_BYTES = 256


@dataclass(frozen=True, slots=True)
class FileId:
    dev: int
    ino: int
    crc: int

    def key(self, agent: str) -> str:
        """The identity string stored in the offsets hash and carried in every batch."""
        return f"{agent}:{self.dev:x}:{self.ino:x}:{self.crc:08x}"


def fingerprint(fd: int, st: os.stat_result) -> FileId | None:
    """The identity of an open file, or ``None`` until its first line is complete."""
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return FileId(st.st_dev, st.st_ino, zlib.crc32(head))


def partition_for(identity: str, partitions: int) -> int:
    """A stable partition for a file: every line of one file lands in one partition."""
    return zlib.crc32(identity.encode()) % partitions

"""The agent's local checkpoint: a cache of committed offsets, for when Redis lost its data.

Plain data, versioned, turned to and from bytes by exactly one pair of functions, written
atomically (temporary file, fsync, rename, fsync of the folder). On load the temporary
file is preferred when it is complete (a crash between its fsync and the rename). Redis
stays authoritative: this copy is only read for files Redis has no offset for.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT_VERSION", "Checkpoint", "FileCheckpoint", "dumps", "loads"]

CHECKPOINT_VERSION = 1
DEFAULT_GRACE_S = 24 * 3600.0


@dataclass(slots=True)
class FileCheckpoint:
    offset: int
    path: str
    updated: float


@dataclass
class Checkpoint:
    """Offsets by file identity, persisted under ``<data_dir>/agent-<id>/checkpoints.json``."""

    files: dict[str, FileCheckpoint] = field(default_factory=dict)

    def record(self, identity: str, offset: int, path: str) -> None:
        self.files[identity] = FileCheckpoint(offset, path, time.time())

    def get(self, identity: str) -> int | None:
        fc = self.files.get(identity)
        return fc.offset if fc else None

    def remove_expired(self, live: set[str], grace_s: float = DEFAULT_GRACE_S) -> int:
        """Drop entries of files no longer tracked for ``grace_s``; returns how many."""
        cutoff = time.time() - grace_s
        dead = [k for k, v in self.files.items() if k not in live and v.updated < cutoff]
        for k in dead:
            del self.files[k]
        return len(dead)

    # -- persistence --------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        data = dumps(self)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        tmp = path.with_suffix(path.suffix + ".tmp")
        for candidate in (tmp, path):
            try:
                return loads(candidate.read_bytes())
            except (OSError, ValueError):
                continue
        return cls()


def dumps(cp: Checkpoint) -> bytes:
    doc: dict[str, Any] = {
        "version": CHECKPOINT_VERSION,
        "files": {
            k: {"offset": v.offset, "path": v.path, "updated": v.updated}
            for k, v in cp.files.items()
        },
    }
    return json.dumps(doc, sort_keys=True).encode()


def loads(data: bytes) -> Checkpoint:
    """Parse a checkpoint; raises ValueError for anything that is not version 1."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
        raise ValueError("unsupported checkpoint version")
    files = {}
    for k, v in doc.get("files", {}).items():
        files[str(k)] = FileCheckpoint(int(v["offset"]), str(v["path"]), float(v["updated"]))
    return Checkpoint(files)

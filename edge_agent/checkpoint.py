"""The agent's local checkpoint: a cache of committed offsets, for when Redis lost its data.

Plain data, versioned, turned to and from bytes by exactly one pair of functions, written
atomically (temporary file, fsync, rename, fsync of the folder). On load the temporary
file is preferred when it is complete (a crash between its fsync and the rename). Redis
stays authoritative: this copy is only read for files Redis has no offset for.

Version 2 adds the truncation generation of each file (see :mod:`edge_agent.identity`);
version 3 the checksum of the bytes before each offset (``crc``, see
:func:`edge_agent.identity.has_end`); version 4 the file's own path (``real``) where the
followed path is a symlink, so rotated siblings are found after the link changed or went
(see :mod:`edge_agent.recovery`). Older versions load without them.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINT_VERSION",
    "DEFAULT_GRACE_S",
    "Checkpoint",
    "FileCheckpoint",
    "checkpoint_path",
    "dumps",
    "loads",
]

CHECKPOINT_VERSION = 4
DEFAULT_GRACE_S = 24 * 3600.0


def checkpoint_path(data_dir: Path, agent: str) -> Path:
    """Where agent ``agent`` keeps its checkpoint (the agent writes it; backfill reads it)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", agent)
    return data_dir / f"agent-{safe}" / "checkpoints.json"


@dataclass(slots=True)
class FileCheckpoint:
    offset: int
    path: str
    updated: float
    crc: int | None = None  # checksum of the bytes before ``offset`` (None: unknown)
    real: str | None = None  # the file's own path when ``path`` is a symlink to it


@dataclass
class Checkpoint:
    """Offsets by file identity and generations by base identity.

    Persisted under ``<data_dir>/agent-<id>/checkpoints.json``.
    """

    files: dict[str, FileCheckpoint] = field(default_factory=dict)
    generations: dict[str, tuple[int, float]] = field(default_factory=dict)

    def record(self, identity: str, offset: int, path: str, crc: int | None = None,
               real: str | None = None) -> bool:
        """Store a committed offset; returns whether the identity is new here (then the
        caller saves soon: a file rotated while the agent is down is found by its entry)."""
        new = identity not in self.files
        self.files[identity] = FileCheckpoint(offset, path, time.time(), crc,
                                              None if real == path else real)
        return new

    def get(self, identity: str) -> int | None:
        fc = self.files.get(identity)
        return fc.offset if fc else None

    def entry(self, identity: str) -> FileCheckpoint | None:
        return self.files.get(identity)

    def set_generation(self, base: str, generation: int) -> None:
        self.generations[base] = (generation, time.time())

    def generation(self, base: str) -> int:
        return self.generations.get(base, (0, 0.0))[0]

    def touch(self, identities: set[str], bases: set[str]) -> None:
        """Mark entries as still seen on disk (their grace period restarts)."""
        now = time.time()
        for k in identities:
            fc = self.files.get(k)
            if fc is not None:
                fc.updated = now
        for b in bases:
            g = self.generations.get(b)
            if g is not None:
                self.generations[b] = (g[0], now)

    def remove_expired(self, live: set[str], live_bases: set[str] | None = None,
                       grace_s: float = DEFAULT_GRACE_S) -> tuple[list[str], list[str]]:
        """Drop entries of files not seen for ``grace_s``.

        Returns:
            the removed identities and the removed base identities (generations).
        """
        cutoff = time.time() - grace_s
        dead = [k for k, v in self.files.items() if k not in live and v.updated < cutoff]
        for k in dead:
            del self.files[k]
        keep = live_bases or set()
        dead_bases = [b for b, (_, t) in self.generations.items()
                      if b not in keep and t < cutoff]
        for b in dead_bases:
            del self.generations[b]
        return dead, dead_bases

    # -- persistence --------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically: temporary file, fsync, rename, fsync of the folder.

        Raises:
            OSError: the folder is not writable (Redis still holds the offsets).
        """
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
        """The saved checkpoint (the temporary file first), or an empty one."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        for candidate in (tmp, path):
            try:
                return loads(candidate.read_bytes())
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return cls()


def dumps(cp: Checkpoint) -> bytes:
    doc: dict[str, Any] = {
        "version": CHECKPOINT_VERSION,
        "files": {
            k: {"offset": v.offset, "path": v.path, "updated": v.updated}
            | ({} if v.crc is None else {"crc": v.crc})
            | ({} if v.real is None else {"real": v.real})
            for k, v in cp.files.items()
        },
        "generations": {b: {"generation": g, "updated": t}
                        for b, (g, t) in cp.generations.items()},
    }
    return json.dumps(doc, sort_keys=True).encode()


def loads(data: bytes) -> Checkpoint:
    """Parse a checkpoint of version 1 to 4.

    Raises:
        ValueError: not a checkpoint, or of another version.
    """
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("version") not in (1, 2, 3, CHECKPOINT_VERSION):
        raise ValueError("unsupported checkpoint version")
    files = {}
    for k, v in doc.get("files", {}).items():
        crc, real = v.get("crc"), v.get("real")
        files[str(k)] = FileCheckpoint(int(v["offset"]), str(v["path"]), float(v["updated"]),
                                       None if crc is None else int(crc),
                                       None if real is None else str(real))
    gens = {str(b): (int(v["generation"]), float(v["updated"]))
            for b, v in doc.get("generations", {}).items()}
    return Checkpoint(files, gens)

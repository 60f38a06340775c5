"""The ``file`` output's durable state: what it keeps so a crash leaves no line twice.

A file's entry in the partition checkpoint (:class:`Committed`: ``seq:gen:size:start``),
the local journal of sizes before a first write and of rotations
(:func:`load_journal`, :func:`save_journal`: written atomically and fsynced), and the two
filesystem steps restore and rotation rely on: :func:`cut` (back to a committed size,
fsynced) and :func:`fsync_dir` (a rename or a new file made durable). How they combine is
:mod:`sinks.file`'s docstring.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailrace.logs import event

__all__ = ["Committed", "cut", "fsync_dir", "load_journal", "save_journal"]

log = logging.getLogger("sinks.file")  # the output's events, under the output's logger


@dataclass(slots=True)
class Committed:
    """A file's entry in the partition checkpoint: ``seq:gen:size:start`` (version 1: size)."""

    seq: int = 0
    gen: int = 0
    size: int = 0
    start: int = 0

    @staticmethod
    def parse(value: bytes | str) -> Committed:
        text = value.decode() if isinstance(value, bytes) else value
        if ":" not in text:  # version 1: the committed size alone
            return Committed(size=int(text))
        seq, gen, size, start = (int(x) for x in text.split(":"))
        return Committed(seq, gen, size, start)

    def encode(self) -> str:
        return f"{self.seq}:{self.gen}:{self.size}:{self.start}"


def cut(path: str, size: int) -> None:
    try:
        actual = os.stat(path).st_size
    except FileNotFoundError:
        return
    if actual > size:
        with open(path, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())
        event(log, logging.INFO, "file_output_recovered",
              f"{path}: cut {actual - size} uncommitted bytes (back to {size})")


def fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_journal(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    try:
        doc = json.loads(path.read_text())
        files = {str(k): int(v) for k, v in doc.get("files", {}).items()}
        rotations = {str(k): int(v) for k, v in doc.get("rotations", {}).items()}
        return files, rotations
    except (OSError, ValueError, AttributeError):
        return {}, {}


def save_journal(path: Path, files: Mapping[str, Any], rotations: Mapping[str, Any]) -> None:
    """Replace the journal atomically; durable when this returns (the new content fsynced,
    then the folder, so that a power cut cannot bring back the old journal: a size taken
    before a first write, or a rotation, must be there after it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump({"version": 2, "files": dict(files), "rotations": dict(rotations)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(str(path))

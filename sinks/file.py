"""The ``file`` output: records to files named by a template, exactly once.

Exactly once rests on three things. The output has one writer (an output-wide lease).
Every commit records each touched file's size in the partition's checkpoint, in the same
script that acks the entries, after the bytes are flushed and fsynced. And before the
first write to a file the checkpoint does not know yet, its size is journaled locally
(fsynced). When a worker takes the output over (or after a broker error), it cuts every
file back to its last committed size (the largest over the partitions: one writer writes
and commits in sequence), or to its journaled size: a partial line or an uncommitted batch
written before a crash disappears, and the redelivered entries write it again, once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from tailrace.logs import event
from tailrace.options import OutputOptions
from tailrace.outcome import Delivered, Outcome
from tailrace.plugins import Record

from .context import OutputContext
from .formats import formatter

__all__ = ["FileOutput", "FileOutputOptions"]

log = logging.getLogger(__name__)


class FileOutputOptions(OutputOptions):
    path: str = Field(
        description="File path template: `{tag}` and strftime fields of the record time "
        "(`./out/{tag}-%Y-%m-%d.log`). Relative to the config file."
    )
    format: Literal["json", "msgpack", "plain", "template"] = Field(
        "json", description="`json` lines, `msgpack`, `plain` (the original line) or `template`."
    )
    template: str = Field("{time} {log}", description="Line template for `format: template`.")
    fsync: bool = Field(True, description="fsync before acknowledging (off: faster, may lose "
                        "the last batches on a power cut; never on a process crash).")
    mkdir: bool = Field(True, description="Create missing folders.")


class FileOutput:
    name: ClassVar[str] = "file"
    description: ClassVar[str] = "Write records to files (JSON lines, msgpack, plain, template)."
    Options: ClassVar[type[FileOutputOptions]] = FileOutputOptions
    single_writer: ClassVar[bool] = True

    def __init__(self, options: FileOutputOptions, ctx: OutputContext) -> None:
        self.o = options
        self.template = str(ctx.resolve_path(options.path))
        self.has_time = "%" in self.template
        self.format = formatter(options.format, options.template)
        self.journal_path = ctx.state_dir / "files.json"
        self.journal: dict[str, int] = _load_journal(self.journal_path)
        self.known: set[str] = set()  # paths the Redis checkpoint knows
        self.fds: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.touched: dict[str, int] = {}
        self._path_cache: dict[tuple[str, int], str] = {}

    # -- recovery -----------------------------------------------------------------------
    def recover(self, checkpoints: list[Mapping[bytes, bytes]]) -> None:
        """Cut every file back to its committed (or journaled) size."""
        committed: dict[str, int] = {}
        for ckpt in checkpoints:
            for k, v in ckpt.items():
                path = k.decode()
                committed[path] = max(committed.get(path, 0), int(v))
        self.known = set(committed)
        targets = dict(self.journal)
        targets.update(committed)
        self._close_all()
        for path, size in targets.items():
            try:
                actual = os.stat(path).st_size
            except FileNotFoundError:
                continue
            if actual > size:
                with open(path, "r+b") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())
                event(log, logging.INFO, "file_output_recovered",
                      f"{path}: cut {actual - size} uncommitted bytes (back to {size})")
        # Journal entries the checkpoint now covers are no longer needed.
        pruned = {p: s for p, s in self.journal.items() if p not in self.known}
        if pruned != self.journal:
            self.journal = pruned
            _save_journal(self.journal_path, self.journal)

    # -- writing ------------------------------------------------------------------------
    def _path(self, record: Record) -> str:
        tag = record.get("_tag", "")
        if not self.has_time:
            key = (tag, 0)
        else:
            t = record.get("time")
            key = (tag, int(t) if isinstance(t, (int, float)) else int(time.time()))
        path = self._path_cache.get(key)
        if path is None:
            path = self.template.replace("{tag}", tag)
            if self.has_time:
                path = time.strftime(path, time.gmtime(key[1]))
            if len(self._path_cache) > 4096:
                self._path_cache.clear()
            self._path_cache[key] = path
        return path

    def _open(self, path: str) -> int:
        fd = self.fds.get(path)
        if fd is None:
            if self.o.mkdir:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            if path not in self.known and path not in self.journal:
                # Journal the size before the first write, so recovery can cut it back.
                self.journal[path] = os.stat(path).st_size if os.path.exists(path) else 0
                _save_journal(self.journal_path, self.journal)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self.fds[path] = fd
            self.sizes[path] = os.fstat(fd).st_size
        return fd

    def write_batch(self, records: list[Record]) -> Outcome:
        groups: dict[str, list[Record]] = {}
        if not self.has_time and records and all(
                r.get("_tag") == records[0].get("_tag") for r in records):
            groups[self._path(records[0])] = records
        else:
            for r in records:
                groups.setdefault(self._path(r), []).append(r)
        fds = []
        for path, recs in groups.items():
            fd = self._open(path)
            data = self.format(recs)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            self.sizes[path] += len(data)
            self.touched[path] = self.sizes[path]
            fds.append(fd)
        if self.o.fsync:
            for fd in fds:
                os.fsync(fd)
        return Delivered()

    def checkpoint(self) -> dict[str, str | int]:
        """Sizes of the files written since the last call (committed with the acks)."""
        out: dict[str, str | int] = dict(self.touched)
        self.known.update(self.touched)
        self.touched.clear()
        return out

    def _close_all(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.sizes.clear()
        self.touched.clear()

    def close(self) -> None:
        self._close_all()


def _load_journal(path: Path) -> dict[str, int]:
    try:
        doc = json.loads(path.read_text())
        return {str(k): int(v) for k, v in doc.get("files", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _save_journal(path: Path, journal: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump({"version": 1, "files": dict(journal)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

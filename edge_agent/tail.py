"""The ``tail`` input: follows files matched by glob patterns, in batches of whole lines.

This module tracks files (discovery, rotation, truncation) and cuts their bytes into
batches; it never talks to Redis. The agent loop (:mod:`edge_agent.agent`) asks for the
sealed batches, commits them with the idempotent producer and reports back with
:meth:`TailInput.on_committed` / :meth:`TailInput.on_conflict`.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from tailrace.logs import event
from tailrace.options import ByteSize, InputOptions
from tailrace.wire import RawBatch

from .formats import Decoded, decode_cri, decode_docker, decode_plain
from .identity import FileId, fingerprint, partition_for

__all__ = ["TailInput", "TailOptions", "TailedFile"]

log = logging.getLogger(__name__)

DEFAULT_READ_BYTES = 256 * 1024
DEFAULT_BATCH_BYTES = 1024 * 1024
DEFAULT_BATCH_LINES = 8192
DEFAULT_BATCH_WAIT_MS = 200
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
DEFAULT_REFRESH_INTERVAL_S = 1.0
DEFAULT_ROTATE_WAIT_S = 5.0

_DECODERS: dict[str, Callable[[bytes, int], Decoded]] = {
    "plain": decode_plain,
    "cri": decode_cri,
    "docker": decode_docker,
}
# /var/log/containers/<pod>_<namespace>_<container>-<container id>.log
_K8S_CONTAINERS_RE = re.compile(
    r"(?P<pod>[^_/]+)_(?P<namespace>[^_/]+)_(?P<container>.+)-(?P<container_id>[0-9a-f]{64})\.log$"
)


class TailOptions(InputOptions):
    """Options of the ``tail`` input."""

    path: list[str] = Field(description="Glob pattern(s) of the files to follow.")
    exclude_path: list[str] = Field(
        default_factory=list, description="Glob pattern(s) of files to leave alone."
    )
    read_from_head: bool = Field(
        False,
        description="For files present at the agent's first start: read from the beginning "
        "(else from the end). Files appearing later are always read from the beginning.",
    )
    format: Literal["plain", "cri", "docker"] = Field(
        "plain", description="`plain` lines, `cri` (containerd/CRI-O) or `docker` (json-file)."
    )
    refresh_interval_s: float = Field(
        DEFAULT_REFRESH_INTERVAL_S, gt=0, description="How often the globs are re-scanned."
    )
    rotate_wait_s: float = Field(
        DEFAULT_ROTATE_WAIT_S,
        ge=0,
        description="How long a rotated (renamed or deleted) file stays open after its end.",
    )
    ignore_older_s: float | None = Field(
        None, gt=0, description="Skip files not modified for this long (unset: none skipped)."
    )
    read_bytes: ByteSize = Field(DEFAULT_READ_BYTES, ge=4096, description="Bytes per read.")
    batch_lines: int = Field(DEFAULT_BATCH_LINES, ge=1, description="Lines per batch at most.")
    batch_bytes: ByteSize = Field(DEFAULT_BATCH_BYTES, ge=1024, description="Bytes per batch.")
    batch_wait_ms: int = Field(
        DEFAULT_BATCH_WAIT_MS, ge=0, description="How long a partial batch waits for more lines."
    )
    max_line_bytes: ByteSize = Field(
        DEFAULT_MAX_LINE_BYTES, ge=64, description="Longest line kept whole."
    )
    long_lines: Literal["split", "truncate", "skip"] = Field(
        "split",
        description="A longer line is `split` into pieces, `truncate`d, or `skip`ped (counted).",
    )
    path_key: str | None = Field("path", description="Record key for the file path (null: none).")

    @field_validator("path", "exclude_path", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value


class TailedFile:
    """One followed file: where it is read, what is batched, what is committed."""

    __slots__ = (
        "batch_at", "committed", "fd", "fid", "identity", "lines", "meta", "offsets",
        "partition", "path", "pos", "rotated_at", "sealed", "size", "skipping", "streams",
        "tag", "times", "nbytes",
    )

    def __init__(self, path: str, fd: int, fid: FileId, identity: str, partition: int,
                 tag: str, meta: dict[str, str]) -> None:
        self.path = path
        self.fd = fd
        self.fid = fid
        self.identity = identity
        self.partition = partition
        self.tag = tag
        self.meta = meta
        self.pos = 0  # next byte to read
        self.committed = 0  # offset committed in Redis (start of the batch being built)
        self.lines: list[bytes] = []
        self.offsets: list[int] = []
        self.times: list[float] | None = None
        self.streams: list[str] | None = None
        self.nbytes = 0
        self.batch_at = 0.0  # when the batch being built got its first line
        self.sealed: RawBatch | None = None  # waiting for its commit
        self.rotated_at: float | None = None
        self.skipping = False  # inside an over-long line being truncated or skipped
        self.size = 0


class TailInput:
    """Follows files and cuts them into :class:`RawBatch` es (no I/O with the broker)."""

    name: ClassVar[str] = "tail"
    description: ClassVar[str] = "Follow log files (plain, CRI, docker) by glob patterns."
    Options: ClassVar[type[TailOptions]] = TailOptions

    def __init__(self, options: TailOptions, *, agent: str, input_id: str, partitions: int,
                 base_dir: Path, counters: Callable[[str, int], None]) -> None:
        self.opts = options
        self.agent = agent
        self.input_id = input_id
        self.partitions = partitions
        self.base_dir = base_dir
        self.count = counters
        self.decode = _DECODERS[options.format]
        self.files: dict[tuple[int, int], TailedFile] = {}
        self.by_path: dict[str, tuple[int, int]] = {}
        self.first_scan = True
        self.next_scan = 0.0
        self.host = agent

    # -- discovery ------------------------------------------------------------------------
    def _patterns(self) -> list[str]:
        return [str(self.base_dir / os.path.expanduser(p)) if not os.path.isabs(p) else p
                for p in self.opts.path]

    def _excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(name, pat)
                   for pat in self.opts.exclude_path)

    def _tag_for(self, path: str) -> str:
        tag = self.opts.tag or self.opts.alias or self.name
        if "*" in tag:
            tag = tag.replace("*", path.replace("/", ".").strip("."))
        return tag

    def _meta_for(self, path: str) -> dict[str, str]:
        meta = {"host": self.host}
        m = _K8S_CONTAINERS_RE.search(os.path.basename(path))
        if m:
            for k, v in m.groupdict().items():
                meta[f"kubernetes.{k}"] = v
        return meta

    def due_scan(self, now: float) -> bool:
        return now >= self.next_scan

    def scan(self, now: float) -> tuple[list[TailedFile], bool]:
        """Glob for files; returns (newly opened files needing a start offset, first scan).

        Also marks files whose path now names another file (renamed away) or that were
        deleted as rotated: they are drained and closed after ``rotate_wait_s``.
        """
        self.next_scan = now + self.opts.refresh_interval_s
        first, self.first_scan = self.first_scan, False
        seen: dict[str, tuple[int, int]] = {}
        new: list[TailedFile] = []
        for pattern in self._patterns():
            for path in glob.glob(pattern):
                if path in seen or self._excluded(path):
                    continue
                try:
                    st = os.stat(path)  # follows symlinks (Kubernetes links into /var/log/pods)
                except OSError:
                    continue
                if not os.path.isfile(path):
                    continue
                key = (st.st_dev, st.st_ino)
                seen[path] = key
                if key in self.files:
                    continue
                if self.opts.ignore_older_s and now - st.st_mtime > self.opts.ignore_older_s:
                    continue
                tf = self._open(path, st)
                if tf is not None:
                    new.append(tf)
        for path, key in list(self.by_path.items()):
            if seen.get(path) != key:
                del self.by_path[path]
                tf = self.files.get(key)
                if tf is not None and tf.rotated_at is None:
                    tf.rotated_at = now
                    event(log, logging.INFO, "tail_file_rotated",
                          f"{tf.path} was rotated or deleted; draining it", input=self.input_id)
        self.by_path.update(seen)
        return new, first

    def _open(self, path: str, st: os.stat_result) -> TailedFile | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            event(log, logging.WARNING, "tail_file_open_error",
                  f"cannot open {path}: {exc.strerror}; check permissions", input=self.input_id)
            return None
        fid = fingerprint(fd, os.fstat(fd))
        if fid is None or (fid.dev, fid.ino) != (st.st_dev, st.st_ino):
            os.close(fd)  # first line incomplete (or replaced meanwhile): try next scan
            return None
        identity = fid.key(self.agent)
        tf = TailedFile(path, fd, fid, identity, partition_for(identity, self.partitions),
                        self._tag_for(path), self._meta_for(path))
        self.files[(fid.dev, fid.ino)] = tf
        return tf

    def start(self, tf: TailedFile, committed: int | None, local: int | None,
              first_scan: bool) -> bool:
        """Set where ``tf`` resumes: Redis's committed offset wins, then the local copy,
        else the head (or the end, for files present at the first start without
        ``read_from_head``).

        Returns True when the committed offset is past the end of the file (it was
        truncated and rewritten with the same first line): the caller resets it in Redis.
        """
        size = os.fstat(tf.fd).st_size
        if committed is not None:
            offset = committed
        elif local is not None:
            offset = local
        elif first_scan and not self.opts.read_from_head:
            offset = _last_line_end(tf.fd, size)
        else:
            offset = 0
        if offset > size:
            event(log, logging.WARNING, "tail_file_truncated",
                  f"{tf.path} is shorter ({size} bytes) than its committed offset {offset}; "
                  "reading it again from the start", input=self.input_id)
            tf.pos = tf.committed = 0
            tf.size = size
            return committed is not None
        tf.pos = tf.committed = offset
        tf.size = size
        return False

    # -- reading ----------------------------------------------------------------------------
    def poll(self, now: float, throttled: set[int]) -> list[TailedFile]:
        """Read a budget from every file; returns files with a sealed batch to commit."""
        ready: list[TailedFile] = []
        for tf in list(self.files.values()):
            if tf.sealed is not None:
                ready.append(tf)  # still waiting (backpressure or broker down): retry
                continue
            if tf.partition in throttled:
                continue
            self._read(tf)
            if self._should_seal(tf, now):
                self._seal(tf)
                ready.append(tf)
            elif tf.rotated_at is not None and tf.pos >= tf.size and not tf.lines \
                    and tf.pos == tf.committed and now - tf.rotated_at >= self.opts.rotate_wait_s:
                self._close(tf, "drained after rotation")
        return ready

    def next_deadline(self) -> float:
        """The earliest time a partial batch must be sealed (for the idle wait)."""
        wait = self.opts.batch_wait_ms / 1000
        times = [tf.batch_at + wait for tf in self.files.values() if tf.lines]
        return min(times, default=self.next_scan)

    def _should_seal(self, tf: TailedFile, now: float) -> bool:
        if tf.lines:
            return (len(tf.lines) >= self.opts.batch_lines or tf.nbytes >= self.opts.batch_bytes
                    or now - tf.batch_at >= self.opts.batch_wait_ms / 1000)
        return tf.pos != tf.committed  # only skipped bytes: move the offset anyway

    def _read(self, tf: TailedFile) -> None:
        o = self.opts
        try:
            st = os.fstat(tf.fd)
        except OSError:
            return
        tf.size = st.st_size
        if st.st_size < tf.pos and not tf.lines:
            self._truncated(tf)
            return
        if tf.size <= tf.pos or len(tf.lines) >= o.batch_lines or tf.nbytes >= o.batch_bytes:
            return
        chunk = os.pread(tf.fd, o.read_bytes, tf.pos)
        if not chunk:
            return
        if tf.skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                tf.pos += len(chunk)
                self.count("long_line_bytes_skipped", len(chunk))
                return
            tf.pos += nl + 1
            tf.skipping = False
            chunk = chunk[nl + 1 :]
        d = self.decode(chunk, tf.pos)
        if d.consumed == 0 and len(chunk) >= o.read_bytes:
            chunk = os.pread(tf.fd, o.max_line_bytes + 1, tf.pos) if o.max_line_bytes > len(
                chunk) else chunk
            d = self.decode(chunk[: o.max_line_bytes + 1], tf.pos)
            if d.consumed == 0 and len(chunk) > o.max_line_bytes:
                self._long_line(tf, chunk[: o.max_line_bytes])
                return
        if not d.lines and d.consumed == 0:
            return
        self._append(tf, d)
        tf.pos += d.consumed

    def _append(self, tf: TailedFile, d: Decoded) -> None:
        if not tf.lines:
            tf.batch_at = time.monotonic()
        tf.lines.extend(d.lines)
        tf.offsets.extend(d.offsets)
        if d.times is not None:
            if tf.times is None or tf.streams is None:
                tf.times, tf.streams = [], []
            tf.times.extend(d.times)
            tf.streams.extend(d.streams or ())
        tf.nbytes += d.consumed

    def _long_line(self, tf: TailedFile, head: bytes) -> None:
        policy = self.opts.long_lines
        self.count(f"long_lines_{policy}", 1)
        event(log, logging.WARNING, "tail_long_line",
              f"{tf.path}: line at byte {tf.pos} is longer than max_line_bytes "
              f"({self.opts.max_line_bytes}); long_lines={policy}", input=self.input_id)
        if policy != "skip":
            piece = Decoded([head], [tf.pos], consumed=len(head))
            if self.decode is not decode_plain:
                piece.times, piece.streams = [0.0], ["unknown"]
            self._append(tf, piece)
        tf.pos += len(head)
        tf.skipping = policy != "split"

    def _seal(self, tf: TailedFile) -> None:
        tf.sealed = RawBatch(
            agent=self.agent, input=self.input_id, tag=tf.tag, path=tf.path, file=tf.identity,
            start=tf.committed, end=tf.pos, lines=tf.lines, offsets=tf.offsets,
            times=tf.times, streams=tf.streams, meta=tf.meta,
        )
        tf.lines, tf.offsets, tf.times, tf.streams, tf.nbytes = [], [], None, None, 0

    def _truncated(self, tf: TailedFile) -> None:
        event(log, logging.WARNING, "tail_file_truncated",
              f"{tf.path} was truncated (copytruncate?); reading it again from the start",
              input=self.input_id)
        # A truncated file gets a new identity from its new first line; re-open it as new.
        self._close(tf, "truncated")

    def _close(self, tf: TailedFile, why: str) -> None:
        self.files.pop((tf.fid.dev, tf.fid.ino), None)
        if self.by_path.get(tf.path) == (tf.fid.dev, tf.fid.ino):
            del self.by_path[tf.path]
        try:
            os.close(tf.fd)
        except OSError:
            pass
        event(log, logging.DEBUG, "tail_file_closed", f"{tf.path}: {why}", input=self.input_id)

    # -- commit feedback ----------------------------------------------------------------------
    def on_committed(self, tf: TailedFile) -> RawBatch:
        batch = tf.sealed
        assert batch is not None
        tf.sealed = None
        tf.committed = batch.end
        return batch

    def on_conflict(self, tf: TailedFile, stored: int) -> None:
        """Redis holds another offset for this file: it wins; drop what is buffered."""
        tf.sealed = None
        tf.lines, tf.offsets, tf.times, tf.streams, tf.nbytes = [], [], None, None, 0
        tf.skipping = False
        tf.pos = tf.committed = stored

    def close(self) -> None:
        for tf in list(self.files.values()):
            self._close(tf, "agent stopping")


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

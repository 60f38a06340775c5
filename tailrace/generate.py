"""The client side: a generator of Kubernetes-style container log files, with rotation.

Files are named like the kubelet's ``/var/log/containers`` links
(``<pod>_<namespace>_<container>-<id>.log``) and hold nginx access-log lines, wrapped in
the CRI format (containerd), docker's json-file format, or plain. Every line carries a
unique request path (``/demo/<file>/<seq>``), so tests and the demo can check that each
line arrived exactly once. Rotation renames ``X.log`` to ``X.log.1`` and starts a new one,
as logrotate's default (rename and create) does.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = ["Generator", "nginx_line"]

_AGENTS = ["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "kube-probe/1.29", "Go-http-client/1.1"]
_METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
_CODES = [200, 200, 200, 200, 201, 204, 301, 404, 500]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def nginx_line(rng: random.Random, now: float, path: str) -> str:
    """One nginx 'combined' access-log line."""
    t = time.gmtime(now)
    stamp = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:" \
            f"{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return (f'{ip} - - [{stamp}] "{rng.choice(_METHODS)} {path} HTTP/1.1" '
            f'{rng.choice(_CODES)} {rng.randrange(100, 20000)} "-" "{rng.choice(_AGENTS)}"')


def _rfc3339(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


@dataclass
class _File:
    index: int
    path: Path
    fd: int
    size: int = 0
    seq: int = 0


class Generator:
    """Writes ``rate`` lines per second (0 = as fast as possible) over ``files`` files.

    Args:
        directory: where the ``.log`` files go (created).
        files: number of container log files written round-robin.
        fmt: ``cri``, ``json`` (docker json-file) or ``plain`` (bare nginx lines).
        rate: lines per second over all files; 0 for no pacing.
        total: stop after this many lines (None: until stopped).
        rotate_bytes: rotate a file when it grows past this size (None: never).
    """

    def __init__(self, directory: str | os.PathLike[str], *, files: int = 4, fmt: str = "cri",
                 rate: float = 1000.0, total: int | None = None,
                 rotate_bytes: int | None = None, seed: int = 1) -> None:
        if fmt not in ("cri", "json", "plain"):
            raise ValueError(f"format must be cri, json or plain, got {fmt!r}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.rate = rate
        self.total = total
        self.rotate_bytes = rotate_bytes
        self.rng = random.Random(seed)
        self.written = 0
        self.rotations = 0
        self.files = [self._open(i) for i in range(files)]

    def _name(self, i: int) -> Path:
        cid = hashlib.sha256(f"container-{i}".encode()).hexdigest()
        return self.dir / f"web-{i}-7d9f8b6c4-x{i:04d}_demo_nginx-{cid}.log"

    def _open(self, i: int) -> _File:
        path = self._name(i)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return _File(i, path, fd, os.fstat(fd).st_size)

    def _wrap(self, line: str, now: float) -> str:
        if self.fmt == "cri":
            return f"{_rfc3339(now)} stdout F {line}\n"
        if self.fmt == "json":
            return orjson.dumps({"log": line + "\n", "stream": "stdout",
                                 "time": _rfc3339(now)}).decode() + "\n"
        return line + "\n"

    def _rotate(self, f: _File) -> None:
        os.close(f.fd)
        os.replace(f.path, f.path.with_name(f.path.name + ".1"))
        f.fd = os.open(f.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        f.size = 0
        self.rotations += 1

    def write_chunk(self, n: int) -> int:
        """Write ``n`` lines (fewer if ``total`` is reached), spread over the files."""
        if self.total is not None:
            n = min(n, self.total - self.written)
        now = time.time()
        per_file: dict[int, list[str]] = {}
        for k in range(n):
            f = self.files[(self.written + k) % len(self.files)]
            f.seq += 1
            line = nginx_line(self.rng, now, f"/demo/{f.index}/{f.seq}")
            per_file.setdefault(f.index, []).append(self._wrap(line, now))
        for idx, lines in per_file.items():
            f = self.files[idx]
            if not self.rotate_bytes:
                data = "".join(lines).encode()
                os.write(f.fd, data)
                f.size += len(data)
                continue
            for line in lines:  # rotation is checked per line so files never overshoot much
                data = line.encode()
                if self.rotate_bytes and f.size + len(data) > self.rotate_bytes and f.size:
                    self._rotate(f)
                os.write(f.fd, data)
                f.size += len(data)
        self.written += n
        return n

    def run(self, stop: threading.Event | None = None, chunk: int = 500) -> int:
        """Write until ``total`` lines or ``stop``; returns the number of lines written."""
        stop = stop or threading.Event()
        start = time.monotonic()
        while not stop.is_set() and (self.total is None or self.written < self.total):
            step = chunk if not self.rate else max(1, min(chunk, int(self.rate / 20) or 1))
            self.write_chunk(step)
            if self.rate:
                ahead = self.written / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    stop.wait(ahead)
        return self.written

    def close(self) -> None:
        for f in self.files:
            os.close(f.fd)

"""Crash test: ``kill -9`` of the agent process at random moments during rotation storms.

A writer appends unique lines to three files and rotates them every few hundred lines
(rename + create, as logrotate does), keeping the rotated files so that nothing the agent
has not read yet disappears while it is dead; the input follows ``*.log*``, so a restarted
agent finds renamed files again by their identity. Every restart must resume exactly at
the committed offsets: the raw streams end up with every line once, in order per file.

With ``format: cri`` most messages are written as ``P`` parts and a final ``F`` line, so
kills land inside partial runs too: a message must come out joined, once, never cut.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from agent_harness import read_raw
from helpers import Role, wait_for, write_config
from redis_server import RedisServer

from tailrace.keys import Keys

pytestmark = pytest.mark.slow

FILES = 3
PARTITIONS = 4


class RotatingWriter:
    """Appends unique lines to FILES files, rotating each every few hundred lines."""

    def __init__(self, folder: Path, seed: int, fmt: str = "plain") -> None:
        self.folder = folder
        self.fmt = fmt
        self.rng = random.Random(seed)
        self.written: list[bytes] = []
        self.rotations = 0
        self.stop = threading.Event()
        self.counts = [0] * FILES
        self.since_rotation = [0] * FILES

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            f = self.rng.randrange(FILES)
            path = self.folder / f"app{f}.log"
            n = self.rng.randint(1, 20)
            lines = []
            for _ in range(n):
                seq += 1
                lines.append(b"app%d-%07d %s" % (f, seq, b"." * self.rng.randrange(80)))
            with open(path, "ab") as out:
                out.write(b"".join(self.encode(ln) for ln in lines))
            self.written.extend(lines)
            self.since_rotation[f] += n
            if self.since_rotation[f] >= self.rng.randint(100, 400):
                self.rotations += 1
                os.rename(path, self.folder / f"app{f}.log.{self.rotations}")
                self.since_rotation[f] = 0
            time.sleep(0.01)

    def encode(self, line: bytes) -> bytes:
        """The line as written to the file: plain, or CRI in 1 to 4 pieces (P.. F)."""
        if self.fmt == "plain":
            return line + b"\n"
        cuts = sorted(self.rng.sample(range(1, len(line)), self.rng.randint(0, 3)))
        pieces = [line[a:b] for a, b in zip([0, *cuts], [*cuts, len(line)], strict=True)]
        return b"".join(b"2024-05-01T12:00:00.000000001Z stdout %s %s\n"
                        % (b"F" if i == len(pieces) - 1 else b"P", piece)
                        for i, piece in enumerate(pieces))


@pytest.mark.parametrize("fmt", ["plain", "cri"])
def test_kill_9_during_rotation_storms_loses_and_duplicates_nothing(
        tmp_path: Path, fresh_redis: RedisServer, prefix: str, fmt: str) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = write_config(tmp_path / "agent.yaml", {
        "service": {"data_dir": str(tmp_path / "data"), "partitions": PARTITIONS,
                    "prefix": prefix, "agent_id": "crashy"},
        "pipeline": {"inputs": [{"name": "tail", "path": str(logs / "*.log*"),
                                 "read_from_head": True, "refresh_interval_s": 0.1,
                                 "format": fmt,
                                 "batch_wait_ms": 20, "batch_lines": 50,
                                 "rotate_wait_s": 0.5}],
                     "outputs": [{"name": "stdout"}]},
    })
    rng = random.Random(20240501)
    writer = RotatingWriter(logs, seed=7, fmt=fmt)
    thread = threading.Thread(target=writer.run, daemon=True)
    agent = Role("agent", cfg, fresh_redis.url).start()
    client = fresh_redis.client()
    thread.start()
    kills = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.5))
            agent.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.4))  # rotations happen while it is dead, too
            agent = Role("agent", cfg, fresh_redis.url).start()
        writer.stop.set()
        thread.join()
        total = sum(p.stat().st_size for p in logs.iterdir())
        keys = Keys(prefix)

        def committed() -> int:
            return sum(int(v) for p in range(PARTITIONS) for v in client.hvals(keys.offsets(p)))

        wait_for(lambda: committed() >= total, timeout=60, interval=0.2,
                 message=f"all {len(writer.written)} lines ({total} bytes) committed")
        time.sleep(0.5)  # a late duplicate would show up now
        assert agent.stop() == 0, agent.output()[-3000:]
    finally:
        writer.stop.set()
        agent.kill()
    shipped = read_raw(client, prefix, PARTITIONS)
    client.close()
    assert kills >= 10 and writer.rotations >= 30, (kills, writer.rotations)
    counts = Counter(shipped.lines)
    dups = [ln for ln, n in counts.items() if n > 1]
    assert not dups, f"{len(dups)} lines shipped twice, e.g. {dups[:2]}"
    missing = set(writer.written) - set(counts)
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:2]}"
    assert len(shipped.lines) == len(writer.written)
    for identity, batches in shipped.by_file().items():
        for prev, cur in zip(batches, batches[1:], strict=False):
            assert cur.start == prev.end, f"{identity}: gap or overlap at byte {cur.start}"
        seqs = [int(ln.split(b"-")[1].split(b" ")[0]) for b in batches for ln in b.lines]
        assert seqs == sorted(seqs), f"{identity}: lines out of order"

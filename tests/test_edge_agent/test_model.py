"""Model-based test: random appends, rotations, copytruncates, deletions, agent restarts and
Redis restarts; the raw streams must hold exactly the lines written, in order per file.

The model is the list of lines written to each logical file. Rotation renames the live
file to a name the input still matches (``*.log*``: a restart finds rotated files by their
identity) and creates a new one; copytruncate copies the file to a name the input does not
match, then truncates it; a file is deleted only after all its lines were shipped (else
they would be gone for anyone). Redis runs with ``appendfsync always`` and is killed -9.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from agent_harness import AgentHarness, Shipped
from helpers import wait_for
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from redis_server import RedisServer

from edge_agent.followed import TailedFile

pytestmark = pytest.mark.slow

FILES = 3
HEADER = b"# f%d: the same first line every time"


class LogFilesMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="tailrace-model-"))
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.redis = RedisServer(self.tmp / "redis", appendonly=True,
                                 appendfsync="always").start()
        self.agent = AgentHarness(self.tmp, self.redis.url, "model", [{
            "name": "tail", "path": str(self.logs / "*.log*"), "read_from_head": True,
            "refresh_interval_s": 0.1, "batch_wait_ms": 5, "rotate_wait_s": 0.3,
            "batch_lines": 7,
        }], partitions=3)
        self.agent.start()
        self.written: dict[int, list[bytes]] = {i: [] for i in range(FILES)}
        self.live: dict[int, list[bytes]] = {i: [] for i in range(FILES)}  # lines in fN.log
        self.seq = 0
        self.renames = 0

    def path(self, f: int) -> Path:
        return self.logs / f"f{f}.log"

    def shipped(self) -> Shipped:
        return self.agent.shipped()

    def wait_shipped(self, lines: list[bytes]) -> None:
        want = set(lines)
        wait_for(lambda: want <= set(self.shipped().lines), timeout=30,
                 message=f"{len(want)} lines shipped")

    # -- rules ----------------------------------------------------------------------------
    @rule(f=st.integers(0, FILES - 1), n=st.integers(1, 25))
    def append(self, f: int, n: int) -> None:
        # Every new or truncated file starts with the same header line, so identities
        # differ only by inode and generation (the hard case for copytruncate).
        new = [] if self.live[f] else [HEADER % f]
        for _ in range(n):
            self.seq += 1
            new.append(b"f%d-%06d %s" % (f, self.seq, b"x" * (self.seq % 37)))
        with open(self.path(f), "ab") as out:
            out.write(b"".join(ln + b"\n" for ln in new))
        self.written[f].extend(new)
        self.live[f].extend(new)

    @rule(f=st.integers(0, FILES - 1))
    def rotate(self, f: int) -> None:
        if not self.path(f).exists():
            return
        self.renames += 1
        os.rename(self.path(f), self.logs / f"f{f}.log.{self.renames}")
        self.path(f).touch()
        self.live[f] = []

    def followed(self, f: int) -> TailedFile | None:
        """The agent's open handle on the live file, once it drained it (else None)."""
        inp = self.agent.agent.inputs[0]
        st = os.stat(self.path(f))
        for tf in list(inp.table.files.values()):
            if (tf.ident.fid.ino == st.st_ino and tf.fd >= 0 and tf.started
                    and tf.committed == st.st_size):
                return tf
        return None

    @precondition(lambda self: self.agent.running)
    @rule(f=st.integers(0, FILES - 1))
    def copytruncate_after_drain(self, f: int) -> None:
        """logrotate's copytruncate, once the agent read the whole file. (A file truncated
        and regrown past the old offset while no agent holds it open is indistinguishable
        from a grown file: that case is a documented limit, not modelled.)"""
        if not self.live[f]:
            return
        self.wait_shipped(self.live[f])
        tf = wait_for(lambda: self.followed(f), timeout=30, message="file drained and open")
        shutil.copy(self.path(f), self.tmp / f"f{f}.copy")  # not followed
        with open(self.path(f), "r+b") as out:
            out.truncate(0)
        self.live[f] = []
        wait_for(lambda: tf.started and tf.buf.scanned == 0 and tf.restart is None,
                 timeout=30, message="truncation handled before new writes")

    @precondition(lambda self: self.agent.running)
    @rule(f=st.integers(0, FILES - 1))
    def delete_after_drain(self, f: int) -> None:
        """Delete the live file once its lines were shipped. When the agent has not opened it
        in its current life yet (restarted, the broker not answering), nothing waits and the
        deletion goes unseen; the next new fN.log often gets the inode back, with the same
        first line: it must still be read from its start."""
        if not self.path(f).exists():
            return
        self.wait_shipped(self.live[f])
        ino = os.stat(self.path(f)).st_ino
        self.path(f).unlink()
        self.live[f] = []
        inp = self.agent.agent.inputs[0]
        wait_for(lambda: all(tf.ident.fid.ino != ino for tf in list(inp.table.files.values()))
                 and not inp.table.retired, timeout=30, message="deleted file closed")

    @precondition(lambda self: self.agent.running)
    @rule()
    def restart_agent(self) -> None:
        self.agent.stop()
        self.agent.start()

    @precondition(lambda self: self.agent.running)
    @rule()
    def stop_agent(self) -> None:
        self.agent.stop()

    @precondition(lambda self: not self.agent.running)
    @rule()
    def start_agent(self) -> None:
        self.agent.start()

    @rule()
    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis.start()

    @invariant()
    def never_a_line_twice(self) -> None:
        written = Counter(ln for lines in self.written.values() for ln in lines)
        dups = [ln for ln, n in Counter(self.shipped().lines).items() if n > written[ln]]
        assert not dups, f"shipped twice: {dups[:3]}"

    def teardown(self) -> None:
        try:
            if not self.agent.running:
                self.agent.start()
            everything = [ln for lines in self.written.values() for ln in lines]
            self.wait_shipped(everything)
            self.agent.stop()
            shipped = self.shipped()
            assert Counter(shipped.lines) == Counter(everything)
            for identity, batches in shipped.by_file().items():
                for prev, cur in zip(batches, batches[1:], strict=False):
                    assert cur.start == prev.end, f"{identity}: gap or overlap at {cur.start}"
                seqs = [int(ln.split(b"-")[1].split(b" ")[0]) for b in batches
                        for ln in b.lines if not ln.startswith(b"#")]
                assert seqs == sorted(seqs), f"{identity}: lines out of order"
                offs = [o for b in batches for o in b.offsets]
                assert offs == sorted(set(offs)), f"{identity}: offsets not increasing"
        finally:
            if self.agent.running:
                self.agent.stop()
            self.redis.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)


TestLogFilesModel = LogFilesMachine.TestCase
TestLogFilesModel.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

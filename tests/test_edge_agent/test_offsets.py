"""One writer of a file's offsets: whatever moved it (a commit, a CONFLICT), the local
checkpoint follows, so a restart on a Redis that lost the offset resumes where Redis was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis
from agent_harness import AgentHarness
from agentconf import tail_input
from helpers import wait_for

from edge_agent.checkpoint import Checkpoint
from edge_agent.followed import TailedFile
from tailrace.keys import Keys


def _followed(h: AgentHarness, path: Path) -> TailedFile:
    assert h.agent is not None
    ino = path.stat().st_ino
    return next(tf for inp in h.agent.inputs for tf in list(inp.table.files.values())
                if tf.ident.fid.ino == ino)


def test_an_offset_moved_by_a_conflict_is_saved_and_a_restart_resumes_there(
        tmp_path: Path, make_agent: Callable[..., AgentHarness], r: redis.Redis,
        prefix: str) -> None:
    path = tmp_path / "logs" / "app.log"
    path.parent.mkdir()
    path.write_bytes(b"".join(b"first-%04d\n" % i for i in range(100)))
    h = make_agent([tail_input(path)], partitions=2)
    h.start()
    h.wait_read_to_end(path)
    tf = _followed(h, path)
    identity, offsets = tf.identity, Keys(prefix).offsets(tf.partition)
    later = b"".join(b"later-%04d\n" % i for i in range(50))
    end = path.stat().st_size + len(later)
    r.hset(offsets, identity, end)  # committed by someone else (a backfill, another run)
    with open(path, "ab") as f:
        f.write(later)
    wait_for(lambda: h.agent is not None and h.agent.status.counters.get("conflicts", 0) >= 1,
             message="the batch of the later lines meets a CONFLICT")
    h.wait_read_to_end(path)  # it went on from Redis's offset, nothing more to commit
    h.stop()
    assert Checkpoint.load(h.agent.checkpoint_path).get(identity) == end
    assert not [ln for ln in h.shipped().lines if ln.startswith(b"later-")]
    r.hdel(offsets, identity)  # Redis came back without it: the local checkpoint says where
    h.start()
    h.wait_read_to_end(path)
    h.stop()
    assert not [ln for ln in h.shipped().lines if ln.startswith(b"later-")]

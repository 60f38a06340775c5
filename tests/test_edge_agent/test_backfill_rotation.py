"""Backfill beside the agent: the same identities, generations and line limits (real agent,
real redis-server). A file the agent tails, copytruncated, then its rotated copy backfilled
(or backfilled before the agent finishes it): every line once."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from agent_harness import AgentHarness
from agentconf import tail_input
from helpers import load_test_config

from edge_agent.backfill import BackfillResult, backfill_file
from tailrace.errors import PipelineError
from tailrace.keys import Keys

PARTITIONS = 4


class Log:
    """Numbered lines into one file; copytruncate as logrotate does it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.written: list[bytes] = []

    def write(self, n: int, first: bytes | None = None) -> None:
        lines = [b"line-%06d %s" % (len(self.written) + i + 1, b"x" * (i % 40)) for i in range(n)]
        if first is not None:
            lines[0] = first
        with open(self.path, "ab") as out:
            out.write(b"".join(ln + b"\n" for ln in lines))
        self.written.extend(lines)

    def copytruncate(self) -> Path:
        copy = self.path.with_name(self.path.name + ".1")
        shutil.copyfile(self.path, copy)
        with open(self.path, "r+b") as f:
            f.truncate(0)
        return copy


def _backfill(h: AgentHarness, path: Path, data_dir: Path | None) -> BackfillResult:
    client = redis.Redis.from_url(h.url)
    try:
        return backfill_file(client, Keys(h.prefix), h.config.inputs[0].options, path=path,
                             agent=h.config.service.agent_name, input_id=h.config.inputs[0].id,
                             partitions=PARTITIONS, base_dir=h.tmp, data_dir=data_dir)
    finally:
        client.close()


def _assert_each_once(h: AgentHarness, written: list[bytes]) -> None:
    shipped, wanted = Counter(h.shipped().lines), Counter(written)
    assert shipped - wanted == Counter(), "lines shipped twice"
    assert wanted - shipped == Counter(), "lines lost"


@pytest.mark.parametrize("order", ["backfill-then-agent", "agent-then-backfill"])
def test_a_copytruncated_copy_backfilled_beside_the_agent_ships_each_line_once(
        tmp_path: Path, make_agent: Callable[..., AgentHarness], order: str) -> None:
    log = Log(tmp_path / "logs" / "app.log")  # the glob matches the live name only
    h = make_agent([tail_input(log.path)], partitions=PARTITIONS)
    log.write(1_000)
    h.start()
    h.wait_read_to_end(log.path)
    h.stop()
    log.write(300)  # while the agent is down: only the copy will hold them
    copy = log.copytruncate()
    log.write(200, first=b"after the rotation")
    if order == "backfill-then-agent":
        done = _backfill(h, copy, h.config.data_dir)
        assert (done.lines, done.already_lines) == (300, 1_000)
        h.start()  # its recovery finds the copy finished
    else:
        h.start()  # its recovery finishes the copy
        h.wait_lines(1_500)
        done = _backfill(h, copy, h.config.data_dir)
        assert (done.lines, done.already_lines) == (0, 1_300)
    h.wait_lines(1_500)
    h.wait_read_to_end(log.path)
    h.stop()
    _assert_each_once(h, log.written)


def test_a_copy_of_a_file_the_running_agent_read_adds_nothing(
        tmp_path: Path, make_agent: Callable[..., AgentHarness]) -> None:
    log = Log(tmp_path / "logs" / "app.log")
    h = make_agent([tail_input(log.path)], partitions=PARTITIONS)
    h.start()
    log.write(1_000)
    h.wait_read_to_end(log.path)
    copy = log.copytruncate()
    log.write(200, first=b"after the rotation")
    h.wait_lines(1_200)
    done = _backfill(h, copy, h.config.data_dir)
    assert (done.lines, done.already_lines) == (0, 1_000)
    h.stop()
    _assert_each_once(h, log.written)


def test_a_copy_is_refused_without_the_agents_checkpoint(
        tmp_path: Path, make_agent: Callable[..., AgentHarness]) -> None:
    log = Log(tmp_path / "logs" / "app.log")
    h = make_agent([tail_input(log.path)], partitions=PARTITIONS)
    h.start()
    log.write(500)
    h.wait_read_to_end(log.path)
    h.stop()
    copy = log.copytruncate()
    with pytest.raises(PipelineError, match="same line as 1 file.*not backfilling it"):
        _backfill(h, copy, None)  # e.g. on another host: it cannot tell what the agent read
    assert len(h.shipped().lines) == 500


def test_a_file_the_agent_moved_to_a_new_generation_is_backfilled_under_it(
        tmp_path: Path, make_agent: Callable[..., AgentHarness]) -> None:
    log = Log(tmp_path / "logs" / "app.log")
    h = make_agent([tail_input(log.path)], partitions=PARTITIONS)
    h.start()
    log.write(100, first=b"the same first line")
    h.wait_read_to_end(log.path)
    with open(log.path, "r+b") as f:
        f.truncate(0)  # truncated in place, rewritten longer with the same first line
    log.write(400, first=b"the same first line")
    h.wait_lines(500)
    h.wait_read_to_end(log.path)
    done = _backfill(h, log.path, h.config.data_dir)
    assert done.identity.endswith(":g1") and (done.lines, done.already_lines) == (0, 400)
    h.stop()
    _assert_each_once(h, log.written)


def test_a_file_truncated_since_the_agent_read_it_is_refused(
        tmp_path: Path, make_agent: Callable[..., AgentHarness]) -> None:
    log = Log(tmp_path / "logs" / "app.log")
    h = make_agent([tail_input(log.path)], partitions=PARTITIONS)
    h.start()
    log.write(100, first=b"the same first line")
    h.wait_read_to_end(log.path)
    h.stop()
    with open(log.path, "r+b") as f:
        f.truncate(0)
    log.write(10, first=b"the same first line")
    with pytest.raises(PipelineError, match="truncated or rewritten since"):
        _backfill(h, log.path, h.config.data_dir)


LONG = b"y" * 5_000


@pytest.mark.parametrize(("policy", "expected"), [
    ("split", [b"short", *(LONG[i:i + 1024] for i in range(0, 5_000, 1024)), b"end"]),
    ("truncate", [b"short", LONG[:1024], b"end"]),
    ("skip", [b"short", b"end"]),
])
def test_backfill_applies_max_line_bytes_and_long_lines_as_the_agent_does(
        tmp_path: Path, r: redis.Redis, prefix: str, policy: str, expected: list[bytes],
        make_agent: Callable[..., AgentHarness]) -> None:
    opts: dict[str, Any] = {"max_line_bytes": 1024, "long_lines": policy}
    path = tmp_path / "logs" / "long.log"
    path.parent.mkdir()
    path.write_bytes(b"short\n" + LONG + b"\nend\n")
    copy = tmp_path / "copy.log"
    copy.write_bytes(b"other first line\n" + LONG + b"\nend\n")
    h = make_agent([tail_input(path, **opts)], partitions=PARTITIONS)
    h.start()
    h.wait_read_to_end(path)
    h.stop()
    assert h.shipped().lines == expected  # what the agent makes of it
    cfg = load_test_config("pipeline:\n  inputs: [{name: tail, path: /none, "
                           f"max_line_bytes: 1024, long_lines: {policy}}}]\n")
    backfill_file(r, Keys(prefix), cfg.inputs[0].options, path=copy, agent="node-1",
                  input_id="tail.0", partitions=PARTITIONS, base_dir=tmp_path)
    lines = [ln for _, b in h.shipped().batches if b.path == str(copy) for ln in b.lines]
    assert lines == [b"other first line", *expected[1:]]

"""Partition leases among real worker processes: joining and leaving rebalance in seconds,
without a gap or a duplicate."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis
from helpers import Role, count_lines, read_json_lines, wait_for
from test_e2e import assert_exactly_once, pipeline_config

from tailrace.generate import Generator
from tailrace.keys import PROCESSORS_GROUP, Keys

pytestmark = pytest.mark.slow


def owners(r: redis.Redis, keys: Keys, partitions: int) -> dict[int, str]:
    vals = r.mget([keys.lease(p, PROCESSORS_GROUP) for p in range(partitions)])
    return {p: v.decode().rsplit(":", 1)[0] for p, v in enumerate(vals) if v}


def test_worker_joining_and_leaving_moves_partitions_without_gap_or_duplicate(
        tmp_path: Path, redis_url: str, prefix: str, r: redis.Redis) -> None:
    parts, total = 8, 40_000
    cfg = pipeline_config(tmp_path, prefix, partitions=parts)
    keys = Keys(prefix)
    out = tmp_path / "out" / "all.log"
    gen = Generator(tmp_path / "logs", files=8, fmt="plain", rate=3_000, total=total)
    stop = threading.Event()
    gen_thread = threading.Thread(target=gen.run, args=(stop,), daemon=True)
    agent = Role("agent", cfg, redis_url).start()
    sink = Role("sink", cfg, redis_url).start()
    first = Role("processor", cfg, redis_url).start()
    roles = [agent, sink, first]
    gen_thread.start()
    try:
        wait_for(lambda: len(owners(r, keys, parts)) == parts, timeout=30,
                 message="the first processor to own every partition")
        assert len(set(owners(r, keys, parts).values())) == 1
        second = Role("processor", cfg, redis_url).start()
        roles.append(second)
        joined = time.monotonic()
        wait_for(lambda: sorted(set(owners(r, keys, parts).values())).__len__() == 2
                 and len(owners(r, keys, parts)) == parts, timeout=30,
                 message="partitions shared by two processors")
        shares = sorted(list(owners(r, keys, parts).values()).count(w)
                        for w in set(owners(r, keys, parts).values()))
        assert shares == [4, 4], shares
        assert time.monotonic() - joined < 15, "rebalance on join took too long"
        assert first.stop() == 0, "a leaving worker drains and exits 0"
        left = time.monotonic()
        wait_for(lambda: len(set(owners(r, keys, parts).values())) == 1
                 and len(owners(r, keys, parts)) == parts, timeout=30,
                 message="the remaining processor to take every partition back")
        assert time.monotonic() - left < 10, "takeover after a clean leave took too long"
        gen_thread.join(timeout=60)
        wait_for(lambda: count_lines(out) >= total,
                 timeout=120, interval=0.5, message="every record delivered")
    finally:
        stop.set()
        gen.close()
        codes = [role.stop() for role in roles if role.alive]
    assert all(c == 0 for c in codes), codes
    assert_exactly_once(read_json_lines(out), total)

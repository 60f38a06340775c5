"""Changing ``service.partitions`` of a running pipeline is refused, never mis-routed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from helpers import ROOT, Role, wait_for
from test_e2e import pipeline_config

from tailrace.broker import PartitionCountChanged, ensure_partition_count
from tailrace.keys import Keys


def test_ensure_partition_count_records_the_first_count_and_refuses_another(
        r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    ensure_partition_count(r, keys, 4)
    ensure_partition_count(r, keys, 4)  # same count: fine, every start does this
    with pytest.raises(PartitionCountChanged) as err:
        ensure_partition_count(r, keys, 8)
    msg = str(err.value)
    assert f"prefix {prefix!r}" in msg and "created with 4 partitions" in msg
    assert "service.partitions: 8" in msg and "set service.partitions back to 4" in msg
    assert r.hget(keys.meta(), "partitions") == b"4", "the stored count must not change"


def test_a_role_started_with_another_partition_count_exits_with_the_reason(
        tmp_path: Path, redis_url: str, prefix: str, r: redis.Redis) -> None:
    first = Role("processor", pipeline_config(tmp_path / "a", prefix, partitions=4),
                 redis_url).start()
    try:
        wait_for(lambda: r.hget(Keys(prefix).meta(), "partitions") == b"4", timeout=30,
                 message="the pipeline to record 4 partitions")
    finally:
        assert first.stop() == 0
    cfg = pipeline_config(tmp_path / "b", prefix, partitions=8)
    for role in ("agent", "processor", "sink"):
        done = subprocess.run([sys.executable, "-m", "tailrace", role, "-c", str(cfg)],
                              env={**Role(role, cfg, redis_url).env}, cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1, (role, done.returncode, done.stderr[-2000:])
        assert "was created with 4 partitions but the config says service.partitions: 8" \
            in done.stderr, done.stderr[-2000:]
    # Nothing of the 8-partition layout was created.
    assert not r.exists(Keys(prefix).raw(7)), "a stream of the new layout appeared"

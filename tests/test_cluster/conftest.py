"""Fixtures of the multi-node tests: a real Redis Cluster and a real Sentinel deployment.

Every server is a ``redis-server`` process on a loopback port of its own, killed in the
fixture's finalizer whatever the test did to it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # multinode.py, the helpers of these tests

from redis_cluster import ClusterUnderTest, SentinelUnderTest  # noqa: E402


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterUnderTest]:
    """3 masters with one replica each (``cluster-node-timeout`` 1 s)."""
    deployment = ClusterUnderTest(tmp_path / "cluster").start()
    yield deployment
    deployment.stop()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelUnderTest]:
    """A master, one replica and three sentinels (master down after 1 s)."""
    deployment = SentinelUnderTest(tmp_path / "sentinel").start()
    yield deployment
    deployment.stop()

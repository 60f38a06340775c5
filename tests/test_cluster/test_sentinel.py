"""tailrace on Redis with Sentinel (master, replica, three sentinels): failover, min replicas.

The roles are real processes given ``redis+sentinel://…/tailrace``; the sentinels promote
the replica when the master is killed, and every role must find the new master by itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from helpers import Role, count_lines, read_json_lines, wait_for
from multinode import flowing_pipeline, stop_all, warnings_of
from redis_cluster import SentinelUnderTest
from test_e2e import assert_exactly_once, pipeline_config

from tailrace.generate import Generator

pytestmark = pytest.mark.slow


def client_names(server_client: redis.Redis) -> set[str]:
    return {c["name"] for c in server_client.client_list() if c.get("name")}


def test_after_a_sentinel_failover_every_role_continues_on_the_new_master(
        tmp_path: Path, sentinel: SentinelUnderTest) -> None:
    total = 36_000
    cfg = pipeline_config(tmp_path, "tr", partitions=4)
    with flowing_pipeline(cfg, sentinel.url, files=3, total=total) as flow:
        flow.delivered(6_000, "before the failover")
        old = sentinel.current_master()
        new = sentinel.kill_master_and_wait_failover()
        assert new is not old
        flow.all_delivered(total, "after the failover")
        c = new.client()
        try:
            names = client_names(c)
        finally:
            c.close()
        # Every role talks to the promoted master now.
        assert {"tailrace-agent", "tailrace-processor", "tailrace-sink"} <= names, names
    roles, out, codes = flow.roles, flow.out, flow.codes
    assert all(code == 0 for code in codes.values()), codes
    assert_exactly_once(read_json_lines(out), total)
    logs = "".join(r.output() for r in roles)
    assert "broker unreachable" in logs, "the failover went unnoticed?"
    assert "Traceback" not in logs, logs[-3000:]


def test_min_replicas_to_write_holds_writes_while_the_replica_is_away(
        tmp_path: Path, sentinel: SentinelUnderTest) -> None:
    """tailrace sets min-replicas-to-write on master and replica; NOREPLICAS is retried."""
    cfg = pipeline_config(tmp_path, "tr", partitions=4,
                          replication={"min_replicas_to_write": 1,
                                       "min_replicas_max_lag_s": 10})
    url = sentinel.url
    logs = tmp_path / "logs"
    gen = Generator(logs, files=2, fmt="plain", rate=0)
    gen.write_chunk(4_000)
    roles = [Role("agent", cfg, url).start(), Role("processor", cfg, url).start(),
             Role("sink", cfg, url).start()]
    out = tmp_path / "out" / "all.log"
    try:
        wait_for(lambda: count_lines(out) >= 4_000, timeout=60, message="the first 4,000")
        for server in sentinel.servers:
            c = server.client()
            try:
                assert c.config_get("min-replicas-to-write") == {
                    "min-replicas-to-write": "1"}, f"not set on {server.port}"
                assert c.config_get("min-replicas-max-lag")["min-replicas-max-lag"] == "10"
            finally:
                c.close()
        replica = sentinel.replicas[0]
        replica.kill()
        master = sentinel.master.client()
        wait_for(lambda: int(master.info("replication")["connected_slaves"]) == 0,
                 timeout=15, message="the master to see its replica gone")
        gen.write_chunk(3_000)
        wait_for(lambda: "NOREPLICAS" in roles[0].output(), timeout=30,
                 message="the agent to be refused with NOREPLICAS")
        time.sleep(1.0)
        assert count_lines(out) == 4_000, "a write got through without a replica"
        assert all(r.alive for r in roles), warnings_of(roles)
        replica.start()
        wait_for(lambda: count_lines(out) >= 7_000, timeout=60, interval=0.25,
                 message="the held lines once the replica is back")
        master.close()
    finally:
        gen.close()
        codes = stop_all(roles)
    assert all(code == 0 for code in codes.values()), codes
    assert_exactly_once(read_json_lines(out), 7_000)

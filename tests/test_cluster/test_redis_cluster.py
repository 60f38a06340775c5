"""tailrace on a real 3-master Redis Cluster (one replica each): spread, reads, failover.

Every test starts its own cluster of six ``redis-server`` processes on loopback ports and
runs the roles as real processes against ``redis+cluster://``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import redis
from helpers import Role, count_lines, read_json_lines, wait_for
from multinode import flowing_pipeline, status_json, stop_all, xreadgroup_calls
from redis_cluster import ClusterUnderTest
from test_e2e import assert_exactly_once, pipeline_config

from tailrace.broker import NoReplicasError, connect, ensure_groups
from tailrace.consumer.lanes import LaneReads
from tailrace.generate import Generator
from tailrace.keys import PROCESSORS_GROUP, Keys

pytestmark = pytest.mark.slow

PARTITIONS = 6


def test_pipeline_spreads_partitions_over_the_masters_and_delivers_exactly_once(
        tmp_path: Path, cluster: ClusterUnderTest) -> None:
    total = 30_000
    gen = Generator(tmp_path / "logs", files=4, fmt="plain", rate=0, total=total)
    gen.run()
    gen.close()
    cfg = pipeline_config(tmp_path, "tr", partitions=PARTITIONS)
    url = cluster.url
    roles = [Role("agent", cfg, url).start(), Role("processor", cfg, url).start(),
             Role("processor", cfg, url).start(), Role("sink", cfg, url).start()]
    out = tmp_path / "out" / "all.log"
    try:
        wait_for(lambda: count_lines(out) >= total, timeout=120, interval=0.25,
                 message=f"{total} records through the cluster")
        doc = status_json(cfg, url)
    finally:
        codes = stop_all(roles)
    assert all(c == 0 for c in codes.values()), (codes, roles[0].output()[-2000:])
    assert_exactly_once(read_json_lines(out), total)
    # Every partition lives on the master that serves its slot, and status says so.
    nodes = {n["node"]: n for n in doc["nodes"]}
    masters = {f"127.0.0.1:{s.port}" for s in cluster.master_servers()}
    assert set(nodes) == masters, nodes
    assert all(n["role"] == "master" and n["replicas"] == 1 for n in nodes.values())
    shown = sorted(p for n in nodes.values() for p in n["partitions"])
    assert shown == list(range(PARTITIONS))
    for p in range(PARTITIONS):
        where = f"127.0.0.1:{cluster.master_of(Keys('tr').raw(p)).port}"
        assert p in nodes[where]["partitions"], (p, where, nodes)
    assert sum(1 for n in nodes.values() if n["partitions"]) >= 2, "all on one master"


def consumer_idle(client: redis.Redis, keys: Keys) -> bool:
    """A published processor record shows its consumer owning every partition and idle
    after a live read (so not recovering any of them)."""
    for key in client.scan_iter(match=keys.worker_pattern()):
        doc = orjson.loads(client.get(key) or b"{}")
        owned = (doc.get("partitions") or {}).get(PROCESSORS_GROUP, [])
        for t in doc.get("threads", []):
            if (t["name"] == "consumer" and t["state"] == "idle" and not t["detail"]
                    and owned == list(range(PARTITIONS))):
                return True
    return False


def test_an_idle_worker_blocks_on_every_partition_instead_of_polling(
        tmp_path: Path, cluster: ClusterUnderTest) -> None:
    cfg = pipeline_config(tmp_path, "tr", partitions=PARTITIONS)
    proc = Role("processor", cfg, cluster.url).start()
    try:
        client = connect(cluster.url)
        keys = Keys("tr")
        wait_for(lambda: all(client.exists(keys.lease(p, PROCESSORS_GROUP))
                             for p in range(PARTITIONS)),
                 timeout=30, message="the processor to own every partition")
        # Recovery of the fresh partitions is over, only live reads remain: the consumer
        # said so (idle after an empty live read) in a record it published since.
        wait_for(lambda: consumer_idle(client, keys), timeout=30, interval=0.2,
                 message="the processor to read its partitions live, idle")
        ps = psutil.Process(proc.proc.pid)  # type: ignore[union-attr]
        calls0, cpu0, t0 = xreadgroup_calls(cluster), sum(ps.cpu_times()[:2]), time.monotonic()
        time.sleep(4.0)  # the window measured (not a wait for something)
        calls1, cpu1, t1 = xreadgroup_calls(cluster), sum(ps.cpu_times()[:2]), time.monotonic()
        client.close()
    finally:
        code = proc.stop()
    assert code == 0, proc.output()[-3000:]
    elapsed = t1 - t0
    # One blocking read per partition per BLOCK (1 s): ~24 calls in 4 s. A poll would make
    # thousands; allow for a re-issue after each partition's first timeout.
    assert calls1 - calls0 <= PARTITIONS * (elapsed + 2), (calls1 - calls0, elapsed)
    assert calls1 - calls0 >= PARTITIONS * (elapsed - 1.5), "reads are not blocking per lane"
    assert (cpu1 - cpu0) / elapsed < 0.15, f"idle worker used {cpu1 - cpu0:.2f}s CPU"


def test_lane_reads_wake_on_the_first_partition_with_data_and_cancel_promptly(
        cluster: ClusterUnderTest) -> None:
    client = connect(cluster.url)
    keys = Keys("lanes")
    by_node: dict[int, int] = {}
    for p in range(32):
        by_node.setdefault(cluster.master_of(keys.raw(p)).port, p)
    parts = sorted(by_node.values())
    assert len(parts) == 3, "expected a partition on each master"
    ensure_groups(client, keys, 32, [])
    reads = LaneReads(client, PROCESSORS_GROUP, "w1", count=10, block_ms=10_000)
    try:
        for p in parts:
            reads.issue(keys.raw(p), [keys.raw(p)], {p: 0})
        assert reads.collect(0.3) == [], "a read returned without data"
        client.xadd(keys.raw(parts[1]), {"v": "1", "b": b"x"})
        t0 = time.monotonic()
        replies = reads.collect(5.0)
        woke = time.monotonic() - t0
        assert woke < 1.0, f"took {woke:.2f}s to see data on one of three blocked lanes"
        assert [(r.lane, r.tag) for r in replies] == [(keys.raw(parts[1]), {parts[1]: 0})]
        assert replies[0].result[0][0] == keys.raw(parts[1]).encode()
        assert set(reads.in_flight()) == {keys.raw(parts[0]), keys.raw(parts[2])}
        t0 = time.monotonic()
        reads.cancel(keys.raw(parts[0]))
        reads.cancel(keys.raw(parts[2]))
        assert time.monotonic() - t0 < 1.0, "cancel waited for the 10 s BLOCK"
        assert reads.in_flight() == {}
        assert all(not r.result and r.error is None for r in reads.collect(0))
    finally:
        reads.close()
        client.close()


@pytest.mark.parametrize("replication", ["async", "wait"])
def test_a_killed_master_fails_over_and_every_line_arrives_once(
        tmp_path: Path, cluster: ClusterUnderTest, replication: str) -> None:
    """Kill -9 the master of partition 0 mid-stream; its replica takes over.

    ``async``: Redis' default replication. ``wait``: ``wait_replicas: 1``; the killed
    master is restarted (it rejoins as the new master's replica), else its old replica,
    now alone, could never confirm a commit again.
    """
    total = 48_000
    svc: dict[str, Any] = {}
    if replication == "wait":
        svc = {"replication": {"wait_replicas": 1, "wait_timeout_ms": 1000}}
    cfg = pipeline_config(tmp_path, "tr", partitions=PARTITIONS, **svc)
    with flowing_pipeline(cfg, cluster.url, files=4, total=total) as flow:
        flow.delivered(8_000, "before the kill")
        victim = cluster.master_of(Keys("tr").raw(0))
        cluster.kill_master_and_wait_failover(victim)
        if replication == "wait":
            victim.start()  # rejoins as a replica of the promoted one
            cluster.wait_healthy()
        flow.all_delivered(total, "after the failover")
    assert all(c == 0 for c in flow.codes.values()), flow.codes
    roles, out = flow.roles, flow.out
    records = read_json_lines(out)
    ids = Counter(str(r["_id"]) for r in records)
    lost, dups = total - len(ids), sum(n - 1 for n in ids.values())
    assert (lost, dups) == (0, 0), f"{replication}: lost {lost}, duplicated {dups}"
    assert_exactly_once(records, total)
    logs = "".join(r.output() for r in roles)
    assert "consumer_broker_error" in logs, "the failover went unnoticed?"
    assert "Traceback" not in logs, logs[-3000:]


def test_status_and_scripts_follow_a_failover_without_a_restart(
        tmp_path: Path, cluster: ClusterUnderTest) -> None:
    """One long-lived client: its scripts and pipelines keep working on the promoted node."""
    client = connect(cluster.url)
    keys = Keys("fo")
    ensure_groups(client, keys, PARTITIONS, ["sink:x"])
    from tailrace.scriptcalls import ProduceResult, Scripts

    scripts = Scripts(client, keys)
    batch = scripts.batch()
    for p in range(PARTITIONS):
        scripts.produce(p, "f", 0, 10, b"payload", client=batch)
    assert [ProduceResult.parse(r).status for r in batch.execute()] == ["ok"] * PARTITIONS
    victim = cluster.master_of(keys.raw(0))
    cluster.kill_master_and_wait_failover(victim)

    def produced_again() -> bool:
        b = scripts.batch()
        for p in range(PARTITIONS):
            scripts.produce(p, "f", 10, 20, b"payload", client=b)
        try:
            return [ProduceResult.parse(r).status for r in b.execute()] == ["ok"] * PARTITIONS
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException,
                ConnectionError):
            return False

    wait_for(produced_again, timeout=30, interval=0.2, message="PRODUCE after the failover")
    assert [client.hget(keys.offsets(p), "f") for p in range(PARTITIONS)] == [b"20"] * PARTITIONS
    client.close()


def test_cluster_spread_evens_out_partitions_while_the_pipeline_runs(
        tmp_path: Path, cluster: ClusterUnderTest) -> None:
    """8 partitions land 2/2/4 on three equal masters; `tailrace cluster spread --apply`
    moves slots (MIGRATE under load: clients follow ASK and MOVED) to 3/3/2."""
    total = 36_000
    cfg = pipeline_config(tmp_path, "tr", partitions=8)
    url = cluster.url
    with flowing_pipeline(cfg, url, files=4, total=total) as flow:
        flow.delivered(6_000, "before the move")
        before = sorted(len(n["partitions"]) for n in status_json(cfg, url)["nodes"])
        assert before == [2, 2, 4], before
        done = subprocess.run([sys.executable, "-m", "tailrace", "cluster", "spread", "-c",
                               str(cfg), "--broker", url, "--apply"], capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "moving partition" in done.stdout, done.stdout
        after = sorted(len(n["partitions"]) for n in status_json(cfg, url)["nodes"])
        assert after == [2, 3, 3], after
        flow.all_delivered(total, "after the move")
    assert all(c == 0 for c in flow.codes.values()), flow.codes
    assert_exactly_once(read_json_lines(flow.out), total)
    again = subprocess.run([sys.executable, "-m", "tailrace", "cluster", "spread", "-c",
                            str(cfg), "--broker", url], capture_output=True, text=True,
                           timeout=60, check=False)
    assert "already even" in again.stdout, again.stdout


def test_confirming_on_a_node_demoted_to_replica_is_a_broker_error_then_works(
        cluster: ClusterUnderTest) -> None:
    """A planned failover (CLUSTER FAILOVER) the client has not seen yet: the probe write
    follows MOVED to the new master, but WAIT goes to the old one, now a replica. That is
    the topology changing (retried by every loop), never an error that kills a worker."""
    from tailrace.broker import BROKER_ERRORS
    from tailrace.scriptcalls import Scripts, WaitPolicy

    client = connect(cluster.url)
    keys = Keys("demoted")
    scripts = Scripts(client, keys, wait=WaitPolicy(replicas=1, timeout_ms=2000))
    scripts.confirm(0)  # the client knows the slot map as it is now
    old = cluster.master_of(keys.probe(0))
    new = cluster.replica_of(old)
    admin = new.client()

    def switched() -> bool:
        return cluster.role(new) == "master" and cluster.role(old) == "slave"

    # A manual failover gives up after 5 s (CLUSTER_MF_TIMEOUT) when the replica cannot
    # catch up in time, as on a loaded machine (seen in CI): ask again, up to four times.
    for _attempt in range(4):
        if switched():
            break
        try:
            admin.execute_command("CLUSTER", "FAILOVER")
        except redis.exceptions.ResponseError:
            pass  # promoted meanwhile ("send CLUSTER FAILOVER to a replica")
        try:
            wait_for(switched, timeout=8, message="the replica promoted")
            break
        except AssertionError:
            continue
    admin.close()
    wait_for(switched, timeout=5, message="the replica promoted and the old master demoted")
    cluster.wait_healthy()

    def confirmed() -> bool:
        try:
            scripts.confirm(0)
        except BROKER_ERRORS:
            return False  # e.g. "WAIT cannot be used with replica instances", as BrokerUnavailable
        return True

    wait_for(confirmed, timeout=30, interval=0.2, message="confirm on the new master")
    client.close()


def test_a_cluster_client_gives_error_replies_tailraces_classes_on_every_node(
        cluster: ClusterUnderTest) -> None:
    """NOREPLICAS from any master is a broker error (retried), as on a single server."""
    masters = [s for s in cluster.live() if cluster.role(s) == "master"]
    for s in masters:
        s.client().config_set("min-replicas-to-write", 5)  # one replica each: writes refused
    client = connect(cluster.url)
    keys = Keys("cls")
    try:
        for p in range(PARTITIONS):  # partitions on every master
            with pytest.raises(NoReplicasError):
                client.xadd(keys.raw(p), {"v": "1", "b": b"x"})
    finally:
        for s in masters:
            s.client().config_set("min-replicas-to-write", 0)
        client.close()

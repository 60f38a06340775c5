"""Cluster benchmark: throughput on 1 and 3 Redis masters, and what a failover loses.

Throughput (``--throughput``, the default) runs two workloads against three deployments:
a single ``redis-server``, a Redis Cluster with one master, and one with three masters
(all on this machine, no replicas):

- ``broker``: producer processes that do only what agents do on the wire: pipelined
  PRODUCE scripts of 1,000-line batches (~110 KB) spread over the partitions. It shows
  what Redis itself can take.
- ``pipeline``: the real roles (one agent, ``--processors`` processors, one file sink)
  on pre-written nginx lines, from the first raw batch to the last line in the output.

Failover (``--failover``) runs the pipeline on a 3-master cluster with one replica each
(``--sentinel``: a master, a replica and three sentinels),
writes lines at a steady rate, and kills the master of partition 0 mid-stream; with
``--lagging-replica`` the replica's link is first cut for 3 s, so that the master
acknowledges writes its replica never gets (the case asynchronous replication
loses). Each setting (asynchronous, ``wait_replicas: 1``) is repeated ``--trials`` times;
it prints lines lost and duplicated in the output, and how long delivery stalled.

    python bench/cluster.py                          # throughput, 400k lines
    python bench/cluster.py --lines 200000 --processors 2
    python bench/cluster.py --failover --trials 3
    python bench/cluster.py --failover --lagging-replica --trials 3
    python bench/cluster.py --failover --sentinel --lagging-replica --trials 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from redis_cluster import ClusterUnderTest, SentinelUnderTest  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from tailrace.broker import connect, ensure_groups  # noqa: E402
from tailrace.generate import Generator, nginx_line  # noqa: E402
from tailrace.keys import Keys  # noqa: E402
from tailrace.scriptcalls import ProduceResult, Scripts  # noqa: E402
from tailrace.wire import RawBatch, encode_raw  # noqa: E402

PARTITIONS = 12  # 3/3/6 slots over three equal masters (docs/scaling.md)
LAG_S = 3.0  # --lagging-replica: how long the replica is stalled before its master dies


# -- deployments -----------------------------------------------------------------------------
@contextmanager
def deployment(kind: str, base: Path, *, replicas: int = 0) -> Iterator[tuple[str, list[Any]]]:
    """(broker URL, server objects) for ``single``, ``cluster1`` or ``cluster3``."""
    shutil.rmtree(base, ignore_errors=True)
    if kind == "single":
        server = RedisServer(base, extra=["--protected-mode", "no"]).start()
        try:
            yield server.url, [server]
        finally:
            server.stop()
        return
    masters = 1 if kind == "cluster1" else 3
    cluster = ClusterUnderTest(base, masters=masters, replicas=replicas).start()
    try:
        yield cluster.url, cluster.servers
    finally:
        cluster.stop()


def redis_cpu(servers: list[Any]) -> float:
    total = 0.0
    for s in servers:
        if s.proc is not None and s.proc.poll() is None:
            t = psutil.Process(s.proc.pid).cpu_times()
            total += t.user + t.system
    return total


# -- broker workload ---------------------------------------------------------------------------
def _batch_payload(i: int, lines: int) -> bytes:
    import random

    rng = random.Random(i)
    now = time.time()
    body = [nginx_line(rng, now, f"/b/{i}/{k}").encode() for k in range(lines)]
    offsets, pos = [], 0
    for line in body:
        offsets.append(pos)
        pos += len(line)
    return encode_raw(RawBatch(agent="bench", input="tail.0", tag="bench", path="/bench",
                               file=f"bench:{i}", start=0, end=pos, lines=body,
                               offsets=offsets))


def _producer(url: str, worker: int, batches: int, per_call: int, payload: bytes,
              out: Any) -> None:
    client = connect(url)
    scripts = Scripts(client, Keys("bench"))
    size = len(payload)
    offsets = [0] * PARTITIONS
    done = 0
    while done < batches:
        b = scripts.batch()
        n = min(per_call, batches - done)
        parts = [(done + k) % PARTITIONS for k in range(n)]
        for p in parts:
            scripts.produce(p, f"w{worker}:p{p}", offsets[p], offsets[p] + size, payload,
                            client=b)
            offsets[p] += size
        for r in b.execute():
            assert ProduceResult.parse(r).status == "ok", r
        done += n
    out.put(done)
    client.close()


def broker_run(url: str, servers: list[Any], producers: int, batches: int,
               lines_per_batch: int) -> dict[str, Any]:
    client = connect(url)
    keys = Keys("bench")
    ensure_groups(client, keys, PARTITIONS, [])
    client.close()
    payload = _batch_payload(0, lines_per_batch)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    per = batches // producers
    cpu0 = redis_cpu(servers)
    t0 = time.monotonic()
    procs = [ctx.Process(target=_producer, args=(url, w, per, PARTITIONS, payload, q))
             for w in range(producers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.monotonic() - t0
    n = sum(q.get() for _ in procs)
    lines = n * lines_per_batch
    return {"lines_per_s": round(lines / elapsed), "mb_per_s": round(n * len(payload) / elapsed
                                                                      / 1e6, 1),
            "redis_cpu_s_per_m": round((redis_cpu(servers) - cpu0) / lines * 1e6, 2),
            "seconds": round(elapsed, 2)}


# -- pipeline workload ----------------------------------------------------------------------
def pipeline_config(work: Path, logs: Path, **service: Any) -> Path:
    cfg = {
        "service": {"data_dir": str(work / "data"), "partitions": PARTITIONS, "prefix": "tr",
                    "lease_ttl_ms": 3000, "heartbeat_ms": 300, "publish_interval_s": 1,
                    **service},
        "pipeline": {
            "inputs": [{"name": "tail", "tag": "nginx", "path": str(logs / "*.log"),
                        "read_from_head": True, "refresh_interval_s": 0.2}],
            "filters": [{"name": "parser", "match": "*", "key": "log", "parser": "nginx",
                         "reserve_data": True}],
            "outputs": [{"name": "file", "alias": "out", "match": "*",
                         "path": str(work / "out" / "nginx.log")}],
        },
    }
    path = work / "bench.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


class Roles:
    """The pipeline's role processes against one broker URL."""

    def __init__(self, cfg: Path, url: str, processors: int) -> None:
        env = dict(os.environ, TAILRACE_BROKER=url)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = cfg.parent
        for i, role in enumerate(["agent", "sink", *["processor"] * processors]):
            log = open(cfg.parent / f"{role}-{i}.log", "wb")  # noqa: SIM115 - closed with proc
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "tailrace", role, "-c", str(cfg), "--log-level",
                 "warning"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))

    def check(self) -> None:
        """Raise if a role died (with the end of its log)."""
        for p in self.procs:
            if p.poll() is not None:
                logs = "\n".join(f.read_text(errors="replace")[-1500:]
                                 for f in self.logs.glob("*.log"))
                raise SystemExit(f"a role exited with {p.returncode}:\n{logs}")

    def cpu(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = psutil.Process(p.pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def count_complete(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def pipeline_run(url: str, servers: list[Any], logs: Path, lines: int, work: Path,
                 processors: int) -> dict[str, Any]:
    cfg = pipeline_config(work, logs)
    out = work / "out" / "nginx.log"
    client = connect(url)
    keys = Keys("tr")
    roles = Roles(cfg, url, processors)
    cpu_redis0 = redis_cpu(servers)
    t_first = None
    try:
        deadline = time.monotonic() + 900
        while t_first is None and time.monotonic() < deadline:
            roles.check()
            try:
                if any(client.exists(keys.raw(p)) and client.xlen(keys.raw(p))
                       for p in range(PARTITIONS)):
                    t_first = time.monotonic()
            except redis.RedisError:
                pass
            time.sleep(0.01)
        while count_complete(out) < lines:
            if time.monotonic() > deadline:
                raise SystemExit("pipeline run timed out")
            roles.check()
            time.sleep(0.05)
        t_last = time.monotonic()
        cpu_roles = roles.cpu()
    finally:
        roles.stop()
        client.close()
    assert t_first is not None
    elapsed = t_last - t_first
    return {"lines_per_s": round(lines / elapsed), "seconds": round(elapsed, 2),
            "roles_cpu_s_per_m": round(cpu_roles / lines * 1e6, 2),
            "redis_cpu_s_per_m": round((redis_cpu(servers) - cpu_redis0) / lines * 1e6, 2)}


# -- failover ----------------------------------------------------------------------------
def replication_gap(written: int, promoted: Any) -> int:
    """Bytes the dead master had written (its replication offset at the kill) that the
    promoted replica never received (Redis lost them with the master)."""
    c = promoted.client()
    try:
        info = c.info("replication")
    finally:
        c.close()
    # The promoted replica's history ends at second_repl_offset (where it took over).
    had = int(info.get("second_repl_offset", -1))
    return max(0, written - had) if had >= 0 else -1


def failover_trial(base: Path, setting: str, lagging: bool, total: int, rate: int,
                   kind: str = "cluster") -> dict[str, Any]:
    """One failover under load on ``kind`` (``cluster``: 3 masters with a replica each;
    ``sentinel``: a master, a replica and three sentinels)."""
    shutil.rmtree(base, ignore_errors=True)
    service: dict[str, Any] = {}
    if setting == "wait":
        service = {"replication": {"wait_replicas": 1, "wait_timeout_ms": 1000}}
    cluster: Any
    if kind == "sentinel":
        cluster = SentinelUnderTest(base / "sentinel").start()
    else:
        cluster = ClusterUnderTest(base / "cluster", masters=3, replicas=1).start()
    logs = base / "logs"
    gen = Generator(logs, files=4, fmt="plain", rate=rate, total=total)
    stop = threading.Event()
    writer = threading.Thread(target=gen.run, args=(stop,), daemon=True)
    cfg = pipeline_config(base / "work", logs, **service)
    out = base / "work" / "out" / "nginx.log"
    roles = Roles(cfg, cluster.url, 2)
    samples: list[tuple[float, int]] = []
    writer.start()
    try:
        while count_complete(out) < total // 5:
            roles.check()
            time.sleep(0.05)
        if kind == "sentinel":
            victim, replica = cluster.master, cluster.replicas[0]
        else:
            victim = cluster.master_of(Keys("tr").raw(0))
            replica = cluster.replica_of(victim)
        if lagging:
            # The replica loses its link and cannot get it back (here: a wrong masterauth
            # makes every reconnection fail): what the master acknowledges from then on
            # exists nowhere else when it dies.
            rc = replica.client()
            rc.config_set("masterauth", "not-the-password")
            rc.client_kill_filter(_type="master")
            end = time.monotonic() + 5
            while rc.info("replication").get("master_link_status") == "up":
                if time.monotonic() > end:
                    raise SystemExit("could not cut the replica's link")
                time.sleep(0.01)
            rc.close()
            time.sleep(LAG_S)
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                samples.append((time.monotonic(), count_complete(out)))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        vc = victim.client()
        written = int(vc.info("replication")["master_repl_offset"])
        vc.close()
        t_kill = time.monotonic()
        sampler.start()
        if kind == "sentinel":
            cluster.kill_master_and_wait_failover()
        else:
            cluster.kill_master_and_wait_failover(victim)
        promoted = time.monotonic() - t_kill
        unsent = replication_gap(written, replica)
        if setting == "wait":
            victim.start()  # it rejoins as a replica: the promoted master has one again
            if kind != "sentinel":
                cluster.wait_healthy()
        writer.join(timeout=300)
        deadline = time.monotonic() + 180
        while count_complete(out) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        sampling.set()
        sampler.join()
        time.sleep(2.0)
    finally:
        stop.set()
        gen.close()
        roles.stop()
        cluster.stop()
    ids: Counter[str] = Counter()
    lines: set[tuple[str, str]] = set()
    with open(out, "rb") as f:
        for raw in f:
            rec = orjson.loads(raw)
            ids[str(rec["_id"])] += 1
            lines.add((str(rec["_tag"]), str(rec["path"])))
    # The longest time the output did not grow after the kill, while lines were due.
    stall, last_t, last_n = 0.0, t_kill, -1
    for t, n in samples:
        if n != last_n:
            stall = max(stall, t - last_t)
            last_t, last_n = t, n
    return {"deployment": kind, "setting": setting, "lagging_replica": lagging,
            "redis_bytes_unsent": unsent,
            "lost": total - len(lines),
            "duplicated": sum(c - 1 for c in ids.values()), "promoted_s": round(promoted, 1),
            "stall_s": round(stall, 1)}


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--throughput", action="store_true", help="(default) 1 vs 3 masters")
    ap.add_argument("--failover", action="store_true", help="lines lost/duplicated")
    ap.add_argument("--lagging-replica", action="store_true",
                    help="with --failover: cut the replica's link first")
    ap.add_argument("--sentinel", action="store_true",
                    help="with --failover: a Sentinel deployment instead of a cluster")
    ap.add_argument("--lines", type=int, default=400_000)
    ap.add_argument("--processors", type=int, default=2)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--broker-batches", type=int, default=6000,
                    help="1,000-line batches the broker workload sends")
    ap.add_argument("--deployments", default="single,cluster1,cluster3")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--settings", default="async,wait")
    ap.add_argument("--rate", type=int, default=8000, help="failover: lines/s written")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    # A SIGTERM (e.g. from `timeout`) unwinds like an error, so the servers and role
    # processes, each in a session of its own, are stopped by the finally blocks.
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(143))
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="tailrace-cluster-"))
    print(f"# machine: {platform.node()}, {psutil.cpu_count()} cpus, python "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    try:
        if args.failover:
            total = args.rate * 12
            for setting in args.settings.split(","):
                for trial in range(args.trials):
                    res = failover_trial(base / f"fo-{setting}-{trial}", setting,
                                         args.lagging_replica, total, args.rate,
                                         "sentinel" if args.sentinel else "cluster")
                    print(" ".join(f"{k}={v}" for k, v in res.items()), flush=True)
            return
        logs = base / "logs"
        gen = Generator(logs, files=8, fmt="plain", rate=0, total=args.lines)
        gen.run(chunk=5000)
        gen.close()
        print(f"# {args.lines:,} nginx lines in 8 files, {PARTITIONS} partitions")
        for kind in args.deployments.split(","):
            with deployment(kind, base / f"redis-{kind}") as (url, servers):
                res = broker_run(url, servers, args.producers, args.broker_batches, 1000)
                print(f"{kind:9s} broker   producers={args.producers} "
                      + " ".join(f"{k}={v}" for k, v in res.items()), flush=True)
            with deployment(kind, base / f"redis-{kind}") as (url, servers):
                res = pipeline_run(url, servers, logs, args.lines, base / f"work-{kind}",
                                   args.processors)
                print(f"{kind:9s} pipeline processors={args.processors} "
                      + " ".join(f"{k}={v}" for k, v in res.items()), flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Scale-out under churn: processor workers SIGKILLed and restarted at random while lines flow."""

from __future__ import annotations

import random
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

WORKERS = 5
CHURN_S = 30.0
PARTITIONS = 8


def lease_owners(client: redis.Redis, prefix: str) -> list[str]:
    """The "worker:token" values of the processors' partition leases that exist now."""
    keys = Keys(prefix)
    values = client.mget([keys.lease(p, PROCESSORS_GROUP) for p in range(PARTITIONS)])
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values if v]


def settled(client: redis.Redis, keys: Keys) -> bool:
    """Every group has read and acknowledged everything on every partition."""
    for p in range(PARTITIONS):
        for stream in (keys.raw(p), keys.out(p)):
            for g in client.xinfo_groups(stream):
                if g["pending"] or g.get("lag") not in (0, None):  # no "lag" before Redis 7
                    return False
    return True


def test_five_workers_killed_at_random_for_30s_deliver_every_line_exactly_once(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    total = 60_000
    cfg = pipeline_config(tmp_path, prefix, partitions=PARTITIONS)
    out = tmp_path / "out" / "all.log"
    gen = Generator(tmp_path / "logs", files=4, fmt="plain", rate=total / CHURN_S, total=total)
    gen_stop = threading.Event()
    gen_thread = threading.Thread(target=gen.run, args=(gen_stop,), daemon=True)
    agent = Role("agent", cfg, redis_url).start()
    sink = Role("sink", cfg, redis_url).start()
    workers = [Role("processor", cfg, redis_url).start() for _ in range(WORKERS)]
    retired: list[Role] = []
    kills = 0
    samples: list[tuple[float, int]] = []
    client = redis.Redis.from_url(redis_url)
    gen_thread.start()
    try:
        wait_for(lambda: count_lines(out) > 0, timeout=60, message="first records delivered")
        end = time.monotonic() + CHURN_S
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.3, 1.5))  # the churn schedule itself
            i = rng.randrange(WORKERS)
            if workers[i].alive:
                workers[i].kill()
                kills += 1
            retired.append(workers[i])
            workers[i] = Role("processor", cfg, redis_url)
            if rng.random() < 0.75:  # most come back at once, some stay away for a round
                workers[i].start()
            for j, w in enumerate(workers):
                if w.proc is None and rng.random() < 0.5:
                    workers[j].start()
            samples.append((time.monotonic(), count_lines(out)))
        for w in workers:
            if w.proc is None:
                w.start()
        # One more kill, timed: its partitions must have live owners again within seconds.
        def owner_role() -> Role | None:  # a live worker that owns a partition now
            owners = lease_owners(client, prefix)
            return next((w for w in workers if w.alive and w.proc is not None and any(
                f"-{w.proc.pid}-" in o for o in owners)), None)

        victim = wait_for(owner_role, timeout=30, message="a worker owning a partition")
        assert victim.proc is not None
        mark = f"-{victim.proc.pid}-"  # worker ids are processor-HOST-PID-RANDOM
        victim.kill()
        killed_at = time.monotonic()
        wait_for(lambda: (len(owners := lease_owners(client, prefix)) == PARTITIONS
                          and not any(mark in o for o in owners)),
                 timeout=30, interval=0.05, message="the victim's partitions taken over")
        takeover_s = time.monotonic() - killed_at
        print(f"takeover after SIGKILL: {takeover_s:.2f}s; {kills} kills; seed {seed}")
        gen_thread.join(timeout=120)
        assert gen.written == total
        wait_for(lambda: count_lines(out) >= total, timeout=240, interval=0.25,
                 message=f"all {total} records after {kills} SIGKILLs (seed {seed})")
        wait_for(lambda: settled(client, Keys(prefix)), timeout=60, interval=0.25,
                 message="every group acknowledged everything")
    finally:
        gen_stop.set()
        gen.close()
        codes = {f"processor-{i}": w.stop() for i, w in enumerate(workers) if w.alive}
        codes["agent"] = agent.stop()
        codes["sink"] = sink.stop()
        client.close()
    assert all(c == 0 for c in codes.values()), (codes, f"seed {seed}")
    assert kills >= 15, f"only {kills} kills in {CHURN_S}s"
    assert takeover_s < 3 * 3.0, (
        f"partitions of a killed worker moved after {takeover_s:.1f}s (seed {seed})")
    # No stall: while workers kept dying, deliveries never stopped for long.
    stalls = [b[0] - a[0] for a, b in zip(samples, samples[1:], strict=False) if b[1] == a[1]]
    assert sum(stalls) < CHURN_S / 2, (
        f"output stalled for {sum(stalls):.1f}s of {CHURN_S}s (seed {seed})")
    assert_exactly_once(read_json_lines(out), total)

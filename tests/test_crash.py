"""Crash tests: real processes SIGKILLed mid-stream; every line still arrives exactly once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
from helpers import Role, count_lines, read_json_lines, wait_for
from redis_server import RedisServer
from test_e2e import assert_exactly_once, pipeline_config

from tailrace.generate import Generator
from tailrace.keys import PROCESSORS_GROUP, Keys, sink_group

pytestmark = pytest.mark.slow


def settled(client: redis.Redis, keys: Keys, partitions: int, groups: dict[str, str]) -> bool:
    """Every group (stage -> group) has read every entry of its streams and acked them all:
    nothing is left that a worker could deliver again."""
    for p in range(partitions):
        for stage, group in groups.items():
            stream = keys.stream(stage, p)
            if not client.exists(stream):
                continue
            last = client.xinfo_stream(stream)["last-generated-id"]
            for g in client.xinfo_groups(stream):
                if g["name"] == group.encode() and (
                        g["pending"] or g["last-delivered-id"] != last):
                    return False
    return True


def saw_broker_down(roles: list[Role], since: dict[int, int]) -> bool:
    """Each kind of role (agent, processor, sink) logged, after its mark in ``since``, that
    the broker is unreachable (one of each is enough: a processor that owns no partition
    has nothing to read, so it may not notice)."""
    seen = {r.role: False for r in roles if r.alive}
    for r in roles:
        if r.alive and "broker unreachable" in r.output()[since[id(r)]:]:
            seen[r.role] = True
    return all(seen.values())


def test_sigkill_of_agent_processor_sink_and_redis_loses_and_duplicates_nothing(
        tmp_path: Path, fresh_redis: RedisServer, prefix: str) -> None:
    total = 60_000
    cfg = pipeline_config(tmp_path, prefix, partitions=6)
    out = tmp_path / "out" / "all.log"
    gen = Generator(tmp_path / "logs", files=3, fmt="plain", rate=4_000, total=total,
                    rotate_bytes=1_500_000)
    gen_stop = threading.Event()
    gen_thread = threading.Thread(target=gen.run, args=(gen_stop,), daemon=True)
    url = fresh_redis.url
    agent = Role("agent", cfg, url).start()
    procs = [Role("processor", cfg, url).start() for _ in range(3)]
    sink = Role("sink", cfg, url).start()
    roles = [agent, *procs, sink]
    gen_thread.start()
    try:
        def progressed(n: int) -> None:
            wait_for(lambda: count_lines(out) >= n, timeout=90, interval=0.1,
                     message=f"{n} records delivered")

        progressed(3_000)
        agent.kill()
        agent = Role("agent", cfg, url).start()
        roles.append(agent)
        progressed(count_lines(out) + 3_000)
        procs[1].kill()
        roles.append(Role("processor", cfg, url).start())
        progressed(count_lines(out) + 3_000)
        sink.kill()
        sink = Role("sink", cfg, url).start()
        roles.append(sink)
        progressed(count_lines(out) + 3_000)
        marks = {id(r): len(r.output()) for r in roles}
        fresh_redis.kill()
        wait_for(lambda: saw_broker_down(roles, marks), timeout=30, interval=0.1,
                 message="every role to see the broker down")
        fresh_redis.start()
        gen_thread.join(timeout=60)
        assert gen.written == total
        wait_for(lambda: count_lines(out) >= total, timeout=180, interval=0.25,
                 message=f"all {total} records after the crashes")
        client = fresh_redis.client()
        # Anything duplicated late would come from an entry still pending or unread.
        wait_for(lambda: settled(client, Keys(prefix), 6,
                                 {"raw": PROCESSORS_GROUP, "out": sink_group("all")}),
                 timeout=60, interval=0.25, message="every entry read and acknowledged")
        client.close()
    finally:
        gen_stop.set()
        gen.close()
        codes = {}
        for role in roles:
            if role.alive:
                codes[role.role + str(id(role))] = role.stop()
    assert all(c == 0 for c in codes.values()), codes
    assert_exactly_once(read_json_lines(out), total)

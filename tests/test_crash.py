"""Crash tests: real processes SIGKILLed mid-stream; every line still arrives exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from helpers import Role, count_lines, read_json_lines, wait_for
from redis_server import RedisServer
from test_e2e import assert_exactly_once, pipeline_config

from tailrace.generate import Generator

pytestmark = pytest.mark.slow


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
        fresh_redis.kill()
        time.sleep(1.0)  # every role sees the broker down for a while
        fresh_redis.start()
        gen_thread.join(timeout=60)
        assert gen.written == total
        wait_for(lambda: count_lines(out) >= total, timeout=180, interval=0.25,
                 message=f"all {total} records after the crashes")
        time.sleep(2.0)  # anything duplicated late would show up now
    finally:
        gen_stop.set()
        gen.close()
        codes = {}
        for role in roles:
            if role.alive:
                codes[role.role + str(id(role))] = role.stop()
    assert all(c == 0 for c in codes.values()), codes
    assert_exactly_once(read_json_lines(out), total)

"""Redis full (maxmemory, noeviction) with the sink down: the pipeline stops at the wall,
loses nothing, and drains on its own once the sink runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import Role, count_lines, read_json_lines, wait_for
from redis_server import RedisServer
from test_e2e import assert_exactly_once, pipeline_config

from tailrace.generate import Generator

pytestmark = pytest.mark.slow


def test_a_pipeline_that_fills_redis_drains_exactly_once_when_the_sink_comes(
        tmp_path: Path, fresh_redis: RedisServer, prefix: str) -> None:
    r = fresh_redis.client()
    if int(r.info("server")["redis_version"].split(".")[0]) < 7:
        pytest.skip("Redis before 7 lets scripts write past maxmemory: no wall to hit")
    total = 40_000  # ~4.4 MB of lines; parsed records take more room than the lines
    gen = Generator(tmp_path / "logs", files=2, fmt="plain", rate=0, total=total)
    gen.run()
    gen.close()
    limit = int(r.info("memory")["used_memory"]) + 4 * 2**20
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", limit)
    # Agents pause at 90% of maxmemory; the processors then fill the rest with records
    # (larger than lines) until Redis refuses them. Reads and batches of 8 KiB keep the
    # proportions of a real deployment (maxmemory of hundreds of MB, batches of 256 KiB:
    # the last 10% holds many processed batches) in this 4 MiB.
    cfg = pipeline_config(tmp_path, prefix, partitions=2)
    doc = yaml.safe_load(cfg.read_text())
    doc["pipeline"]["inputs"][0].update(read_bytes=8192, batch_bytes=8192)
    cfg.write_text(yaml.safe_dump(doc))
    agent = Role("agent", cfg, fresh_redis.url).start()
    proc = Role("processor", cfg, fresh_redis.url).start()
    roles = [agent, proc]
    out = tmp_path / "out" / "all.log"
    try:
        wait_for(lambda: "consumer_redis_full" in proc.output(), timeout=90, interval=0.5,
                 message="the processor held back by a full Redis")
        assert agent.alive and proc.alive
        sink = Role("sink", cfg, fresh_redis.url).start()
        roles.append(sink)
        wait_for(lambda: count_lines(out) >= total, timeout=120, interval=0.5,
                 message=f"all {total} records once the sink runs")
    finally:
        codes = {role.role: role.stop() for role in roles if role.alive}
    assert codes == {"agent": 0, "processor": 0, "sink": 0}, codes
    logs = "".join(role.output() for role in roles)
    assert "Traceback" not in logs, logs[-3000:]
    assert_exactly_once(read_json_lines(out), total)
    r.close()

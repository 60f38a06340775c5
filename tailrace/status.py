"""The pipeline's state, read from Redis: workers, lag per group and partition, dead letters.

Used by ``tailrace status`` and the HTTP ``/api/v1/status``. One pipelined round trip
(one per node on a Redis Cluster) reads every stream's length, every group's position and
pending summary, and every worker's published lifecycle record; ``nodes`` lists the Redis
masters and the partitions each serves.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from .keys import PROCESSORS_GROUP, Keys
from .topology import describe_nodes, mget_any

__all__ = ["collect", "entry_ms"]

_LAG_SCAN_LIMIT = 100_000


def entry_ms(entry_id: bytes | str | None) -> int | None:
    """Milliseconds part of a stream entry id (its creation time), or None."""
    if not entry_id:
        return None
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def _workers(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    names = list(client.scan_iter(match=keys.worker_pattern(), count=500))
    if not names:
        return []
    now = time.time()
    out = []
    for raw in mget_any(client, names):
        if not raw:
            continue  # expired between SCAN and MGET
        rec = orjson.loads(raw)
        rec["heartbeat_age_s"] = round(now - float(rec.get("updated", now)), 1)
        out.append(rec)
    return sorted(out, key=lambda w: (w.get("role", ""), w.get("host", ""), w.get("id", "")))


def _agent_files(worker: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-file rows an agent published: a list, or ``{"shown": [...], ...}``."""
    files = worker.get("files") or []
    if isinstance(files, dict):
        files = files.get("shown") or []
    return [f for f in files if isinstance(f, dict)]


def _agent_totals(worker: dict[str, Any]) -> dict[str, int]:
    """Files followed, open, and bytes not yet committed, over all of an agent's files."""
    files = worker.get("files")
    if not isinstance(files, dict):
        return {}
    return {"files_total": int(files.get("total", 0)), "files_open": int(files.get("open", 0)),
            "bytes_behind": int(files.get("bytes_behind", 0))}


def _lag(client: redis.Redis, stream: str, info: dict[str, Any]) -> int:
    """Entries of ``stream`` not yet delivered to the group (Redis 7 reports it directly)."""
    lag = info.get("lag")
    if lag is not None:
        return int(lag)
    last = info.get("last-delivered-id") or b"0-0"
    last_s = last.decode() if isinstance(last, bytes) else str(last)
    return len(client.xrange(stream, f"({last_s}", "+", count=_LAG_SCAN_LIMIT) or [])


def collect(client: redis.Redis, keys: Keys, partitions: int,
            sink_groups: list[str]) -> dict[str, Any]:
    """A JSON-able snapshot of the whole pipeline."""
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for p in range(partitions):
        for stage in ("raw", "out", "dlq"):
            pipe.xlen(keys.stream(stage, p))
        pipe.xinfo_groups(keys.raw(p))
        pipe.xinfo_groups(keys.out(p))
    results = pipe.execute(raise_on_error=False)
    dead: dict[int, int] = {}
    wanted = {PROCESSORS_GROUP: "raw", **{g: "out" for g in sink_groups}}
    # Configured groups show even before any worker created them (nothing to do yet).
    groups: dict[str, dict[str, Any]] = {
        name: {"stream": stage, "configured": True, "lag": 0, "pending": 0, "partitions": []}
        for name, stage in wanted.items()
    }
    pending_calls: list[tuple[str, int, str]] = []
    per_part: list[tuple[int, str, str, dict[str, Any], int]] = []
    for p in range(partitions):
        raw_len, out_len, dlq_len, raw_groups, out_groups = results[p * 5 : p * 5 + 5]
        dead[p] = int(dlq_len) if isinstance(dlq_len, int) else 0
        for stage, infos, length in (("raw", raw_groups, raw_len), ("out", out_groups, out_len)):
            if not isinstance(infos, list):
                continue
            for info in infos:
                name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
                per_part.append((p, stage, name, info, int(length)))
                pending_calls.append((keys.stream(stage, p), p, name))
    pipe = client.pipeline(transaction=False)
    for stream, _p, name in pending_calls:
        pipe.xpending(stream, name)
    summaries = pipe.execute(raise_on_error=False)
    for (p, stage, name, info, length), summary in zip(per_part, summaries, strict=True):
        stream = keys.stream(stage, p)
        pending = int(info.get("pending", 0))
        oldest = entry_ms(summary.get("min")) if isinstance(summary, dict) else None
        lag = _lag(client, stream, info)
        g = groups.setdefault(name, {"stream": stage, "configured": name in wanted,
                                     "lag": 0, "pending": 0, "partitions": []})
        g["lag"] += lag + pending
        g["pending"] += pending
        g["partitions"].append({
            "partition": p, "length": length, "lag": lag + pending, "pending": pending,
            "consumers": int(info.get("consumers", 0)),
            "oldest_pending_age_s": round((now_ms - oldest) / 1000, 1) if oldest else None,
        })
    workers = _workers(client, keys)
    nodes = describe_nodes(client, {p: keys.raw(p) for p in range(partitions)})
    agents = [{"id": w["id"], "host": w.get("host"), "files": _agent_files(w),
               **_agent_totals(w)} for w in workers if w.get("role") == "agent"]
    return {
        "pipeline": {"prefix": keys.prefix, "partitions": partitions},
        "time": now_ms / 1000,
        "workers": workers,
        "nodes": nodes,
        "groups": groups,
        "dead_letters": {"total": sum(dead.values()),
                         "partitions": {str(p): n for p, n in dead.items() if n}},
        "agents": agents,
    }

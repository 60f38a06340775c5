"""A supervisor's view for ``service.http``: the lifecycle records of its children.

Children of ``tailrace run`` and ``--workers N`` do not bind the port themselves; the
parent serves ``/health``, ``/metrics`` and ``/api/v1/status`` for all of them from the
records they publish to Redis.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import orjson
import redis

from ..errors import BrokerUnavailable
from ..keys import Keys
from ..topology import mget_any

__all__ = ["children_records"]


def children_records(client: Callable[[], redis.Redis], keys: Keys,
                     pids: Callable[[], dict[str, int]],
                     ) -> Callable[[], list[dict[str, Any]]]:
    """The records of this supervisor's children; ``client`` gives the broker client (it may
    connect on first use: a cluster client needs a node to answer to be built)."""
    host = socket.gethostname()

    def records() -> list[dict[str, Any]]:
        wanted = set(pids().values())
        try:
            c = client()
            names = list(c.scan_iter(match=keys.worker_pattern(), count=500))
            raws = mget_any(c, names)
        except (redis.exceptions.RedisError, OSError, BrokerUnavailable) as exc:
            return [{"id": "supervisor", "role": "supervisor", "host": host,
                     "state": "broker_down",
                     "threads": [{"name": "main", "state": "broker_down", "detail": str(exc)}]}]
        out = []
        for raw in raws:
            if not raw:
                continue
            rec = orjson.loads(raw)
            if rec.get("host") == host and rec.get("pid") in wanted:
                out.append(rec)
        return out

    return records

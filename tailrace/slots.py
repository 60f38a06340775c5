"""Even out the partitions over the masters of a Redis Cluster by moving their slots.

A partition lives in the slot of its hash tag ``{pN}``; the slots are spread over the
masters in ranges that know nothing of tailrace, so a few partitions can land unevenly
(8 partitions on 3 equal masters: 2/2/4). :func:`plan_spread` picks partitions to move
from the masters with the most to those with the fewest, and :func:`move_slot` moves one
slot the way Redis Cluster resharding does (``CLUSTER SETSLOT … IMPORTING/MIGRATING``,
``MIGRATE`` of every key, ``CLUSTER SETSLOT … NODE``), so clients follow it with ASK and
MOVED while the pipeline runs. Only the slots of tailrace partitions are moved (with
whatever else lives in them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .errors import PipelineError
from .keys import Keys
from .topology import is_cluster

__all__ = ["Move", "move_slot", "placement", "plan_spread"]

_MIGRATE_BATCH = 100
_MIGRATE_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Move:
    """Move ``partition`` (its ``slot``) from master ``source`` to master ``target``."""

    partition: int
    slot: int
    source: str
    target: str


def _cluster(client: redis.Redis) -> Any:
    if not is_cluster(client):
        raise PipelineError("the broker is not a Redis Cluster: nothing to spread (a single "
                            "server or a Sentinel master holds every partition)")
    return client


def placement(client: redis.Redis, keys: Keys, partitions: int) -> dict[str, list[int]]:
    """Master name -> the partitions it serves now (every master, even one with none)."""
    rc = _cluster(client)
    rc.nodes_manager.initialize()
    out: dict[str, list[int]] = {str(n.name): [] for n in rc.get_primaries()}
    for p in range(partitions):
        out.setdefault(str(rc.get_node_from_key(keys.raw(p)).name), []).append(p)
    return out


def plan_spread(where: dict[str, list[int]], slot_of: Callable[[int], int]) -> list[Move]:
    """The fewest moves that leave every master within one partition of the others.

    Partitions move from the master with the most to the one with the fewest, highest
    numbered first; ``slot_of`` gives a partition's slot.
    """
    counts = {node: sorted(parts) for node, parts in where.items()}
    moves: list[Move] = []
    while counts:
        most = max(counts, key=lambda n: (len(counts[n]), n))
        least = min(counts, key=lambda n: (len(counts[n]), n))
        if len(counts[most]) - len(counts[least]) <= 1:
            return moves
        p = counts[most].pop()
        counts[least].append(p)
        moves.append(Move(p, slot_of(p), most, least))
    return moves


def move_slot(client: redis.Redis, move: Move) -> int:
    """Move one slot with all its keys from ``move.source`` to ``move.target``.

    Returns:
        the number of keys migrated.

    Raises:
        PipelineError: a node refused a step (the message names it); the slot may be left
            in MIGRATING/IMPORTING state: run the command again, or ``redis-cli --cluster
            fix``.
    """
    rc = _cluster(client)
    src_node, dst_node = rc.get_node(node_name=move.source), rc.get_node(node_name=move.target)
    if src_node is None or dst_node is None:
        raise PipelineError(f"node {move.source if src_node is None else move.target} is not "
                            "in the cluster any more; run the command again")
    src: Any = rc.get_redis_connection(src_node)
    dst: Any = rc.get_redis_connection(dst_node)
    src_id, dst_id = _id(src), _id(dst)
    slot = move.slot
    moved = 0
    try:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while True:
            names = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, _MIGRATE_BATCH)
            if not names:
                break
            src.execute_command("MIGRATE", dst_node.host, dst_node.port, "", 0,
                                _MIGRATE_TIMEOUT_MS, "KEYS", *names)
            moved += len(names)
        # The target first, so it answers for the slot before the source redirects to it.
        dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for node in rc.get_primaries():
            if node.name not in (move.source, move.target):
                rc.get_redis_connection(node).execute_command("CLUSTER", "SETSLOT", slot,
                                                              "NODE", dst_id)
    except redis.exceptions.ResponseError as exc:
        raise PipelineError(f"moving slot {slot} (partition {move.partition}) from "
                            f"{move.source} to {move.target} failed: {exc}") from exc
    _wait_owned(rc, slot, move.target)
    return moved


def _id(node: Any) -> str:
    raw = node.execute_command("CLUSTER", "MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _wait_owned(rc: Any, slot: int, target: str, timeout_s: float = 10.0) -> None:
    """Until the cluster client routes ``slot`` to ``target`` (its slot map re-read)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rc.nodes_manager.initialize()
        node = rc.nodes_manager.get_node_from_slot(slot)
        if node is not None and node.name == target:
            return
        if time.monotonic() > deadline:
            raise PipelineError(f"slot {slot} moved to {target}, but the cluster still "
                                f"routes it to {node.name if node else 'nobody'}")
        time.sleep(0.1)

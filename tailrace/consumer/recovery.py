"""Taking over a partition's pending entries: the broker calls a consumer makes when it
acquires a partition, or when the broker lost its group.

Kept apart from the worker loop (:mod:`tailrace.consumer.loop`) because they are plain,
stateless Redis conversations, each testable on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis

from ..broker import BROKER_ERRORS
from ..keys import Keys
from ..logs import event

__all__ = ["claim_pending", "group_lost", "over_delivered", "recreate_group"]

log = logging.getLogger(__name__)


def group_lost(exc: BaseException) -> bool:
    """The stream or its group is gone (``NOGROUP``; ``UNBLOCKED`` for a blocked read whose
    stream was deleted): what a failover to a node that never had them looks like."""
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


def claim_pending(client: redis.Redis, stream: str, group: str, consumer: str) -> int:
    """Claim every entry the group has pending on ``stream`` to ``consumer``; return how many.

    Min idle time 0: the lease, not idleness, says the previous owner is gone.
    """
    start = "0-0"
    claimed = 0
    while True:
        resp: Any = client.xautoclaim(stream, group, consumer, 0, start_id=start, count=100)
        start = resp[0].decode() if isinstance(resp[0], bytes) else str(resp[0])
        claimed += len(resp[1])
        if start == "0-0":
            return claimed


def over_delivered(client: redis.Redis, stream: str, group: str, consumer: str,
                   max_deliveries: int) -> list[bytes]:
    """The oldest of ``consumer``'s pending entries on ``stream``, when it was delivered more
    than ``max_deliveries`` times (else nothing).

    Only the oldest: every takeover's XAUTOCLAIM counts a delivery for *each* pending entry,
    so the entries pending behind a poison one (read with it, or by the next read sent
    ahead) cross the limit with it, without having been handled again. History handles
    pending entries one at a time from the oldest, so the entry a worker keeps dying on is
    the oldest pending one; the others get their turn once it is dead-lettered (a second
    poison entry right behind it is dead-lettered at the next takeover).
    """
    page: Any = client.xpending_range(stream, group, "-", "+", 1, consumer)
    return [item["message_id"] for item in page
            if int(item["times_delivered"]) > max_deliveries]


def recreate_group(client: redis.Redis, keys: Keys, stage: str, group: str,
                   partitions: Iterable[int]) -> list[int]:
    """Create ``group`` again on the partitions' ``stage`` streams where it was lost (a
    failover that lost its creation, or a node that came back empty); return where it was.

    The group starts at 0, so every entry still in the stream is read again; outputs are
    idempotent by record id. Other outputs' groups come back when their sinks meet the same
    error.
    """
    parts = sorted(partitions)
    pipe = client.pipeline(transaction=False)
    for p in parts:
        pipe.xgroup_create(keys.stream(stage, p), group, id="0", mkstream=True)
    created = []
    for p, res in zip(parts, pipe.execute(raise_on_error=False), strict=True):
        if not isinstance(res, BaseException):
            created.append(p)
        elif isinstance(res, BROKER_ERRORS) or "BUSYGROUP" not in str(res):
            raise res
    if created:
        event(log, logging.WARNING, "consumer_group_recreated",
              f"group {group} was missing on partitions {created} (lost in a failover, or "
              "Redis lost its data); recreated it at id 0: entries still in the streams are "
              "read again", group=group)
    return created

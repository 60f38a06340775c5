"""Lane reads (one blocking XREADGROUP per partition, as on a Redis Cluster) and their reset."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from helpers import wait_for
from redis.connection import Connection

from tailrace.consumer.lanes import LaneReads


def test_a_read_issued_just_before_a_reset_is_never_sent_afterwards(
        r: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker error on one lane resets them all, and the consumer then re-reads its
    pending entries. A lane whose thread had not sent its read yet used to send it after
    the reset, on a new connection: the next entry went to that read, nobody processed
    it, and it stayed pending on this consumer behind the re-read (found as 75 and 375
    lines missing after a slot move on a loaded machine)."""
    stream = f"{prefix}:raw"
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    sending, sent = threading.Event(), threading.Event()
    plain_send = Connection.send_command

    def slow_send(self: Connection, *args: Any, **kwargs: Any) -> None:
        if args and args[0] == "XREADGROUP":
            sending.set()
            time.sleep(0.3)  # the lane thread is slow to get its read out (a loaded CPU)
        plain_send(self, *args, **kwargs)
        if args and args[0] == "XREADGROUP":
            sent.set()

    def blocked_reads() -> int:
        return sum(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
                   for c in r.client_list())

    monkeypatch.setattr(Connection, "send_command", slow_send)
    reads = LaneReads(r, "g", "w1", count=10, block_ms=5_000)
    try:
        reads.issue("lane", [stream], tag=None)
        assert sending.wait(5.0)
        reads.reset()
        assert sent.wait(5.0)  # before the reset returned (under the lane's lock), or after
        # A read sent on the lane's connection is dropped with it; one sent after the
        # reset, on a new connection, stays blocked on the server.
        wait_for(lambda: blocked_reads() == 0, timeout=3.0,
                 message="no read of the reset lane left blocked on the server")
        r.xadd(stream, {"v": "1"})  # would be served at once to a blocked read
        assert r.xpending(stream, "g")["pending"] == 0, (
            "a read sent after the reset took the entry: it is pending on w1, unprocessed")
        assert reads.collect(0.1) == []
    finally:
        reads.close()

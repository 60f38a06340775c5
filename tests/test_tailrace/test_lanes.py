"""Reads in flight: lane reads (one blocking XREADGROUP per partition, as on a Redis Cluster)
and their reset; the read a worker on one server sends ahead (consumer/prefetch.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import wait_for
from redis.connection import Connection

from tailrace.consumer.lanes import LaneReads
from tailrace.consumer.prefetch import InlineRead


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


def blocked_on(r: redis.Redis) -> int:
    """XREADGROUP calls blocked on the server now."""
    return sum(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
               for c in r.client_list())


@pytest.fixture
def inline(r: redis.Redis, prefix: str) -> Iterator[tuple[str, InlineRead]]:
    """A stream with group ``g`` (from id 0) and an InlineRead of it as ``w1``, closed after."""
    stream = f"{prefix}:raw"
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    read = InlineRead(r, "g", "w1", count=2, block_ms=10_000)
    yield stream, read
    read.close()


def issue_blocked(r: redis.Redis, read: InlineRead, stream: str, tag: str) -> None:
    """Send a read of ``stream`` and wait until the server has it blocked."""
    read.issue("lane", [stream], tag=tag)
    wait_for(lambda: blocked_on(r) == 1, timeout=5, message=f"read {tag} blocked")


def test_a_read_sent_ahead_is_served_meanwhile_and_collected_later(
        r: redis.Redis, inline: tuple[str, InlineRead]) -> None:
    stream, read = inline
    ids = [r.xadd(stream, {"n": str(i)}) for i in range(3)]
    read.issue("lane", [stream], tag="t1")
    assert read.in_flight() == {"lane": frozenset([stream])}
    # served while the caller does something else: pending on w1 before any collect
    wait_for(lambda: r.xpending(stream, "g")["pending"] == 2, timeout=5,
             message="the read served without being collected")
    (reply,) = read.collect(1.0)
    assert reply.tag == "t1" and reply.error is None
    assert [eid for eid, _f in reply.result[0][1]] == ids[:2]
    assert read.in_flight() == {} and not read.has_ready()
    read.issue("lane", [stream], tag="t2")
    (reply,) = read.collect(1.0)
    assert [eid for eid, _f in reply.result[0][1]] == ids[2:]


def test_cancel_ends_a_blocked_read_at_once_and_keeps_its_reply(
        r: redis.Redis, inline: tuple[str, InlineRead]) -> None:
    stream, read = inline
    issue_blocked(r, read, stream, "t")
    began = time.monotonic()
    read.cancel("lane")
    assert time.monotonic() - began < 2.0, "cancel waited for the block to run out"
    assert read.in_flight() == {} and read.has_ready()
    (reply,) = read.collect(0)
    assert reply.tag == "t" and reply.error is None and not reply.result
    r.xadd(stream, {"n": "1"})
    assert r.xpending(stream, "g")["pending"] == 0, "a cancelled read took an entry"


def test_reset_cuts_the_read_and_a_broken_connection_gives_an_error_reply(
        r: redis.Redis, inline: tuple[str, InlineRead]) -> None:
    stream, read = inline
    issue_blocked(r, read, stream, "t")
    read.reset()
    wait_for(lambda: blocked_on(r) == 0, timeout=3, message="the reset read cut")
    assert read.collect(0) == []
    issue_blocked(r, read, stream, "t2")
    r.client_kill_filter(_type="normal", skipme=True)  # the server drops every client
    (reply,) = read.collect(1.0)
    assert reply.tag == "t2" and isinstance(reply.error, redis.exceptions.ConnectionError)
    read.issue("lane", [stream], tag="t3")  # a fresh connection
    r.xadd(stream, {"n": "1"})
    (reply,) = read.collect(1.0)
    assert reply.error is None and len(reply.result[0][1]) == 1

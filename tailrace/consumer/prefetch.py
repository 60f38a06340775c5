"""The next read of a single server, sent before the current entries are handled.

On one server a worker's reads of new entries go out one at a time on its loop's thread;
without more, each step waits for Redis twice: for the commit, then for the next read
(Redis builds a reply of several hundred KB, the client takes it in). :class:`InlineRead`
lets the loop *send* the next ``XREADGROUP`` as soon as a reply is in, on a connection of
its own, and read its reply only at the next step: Redis serves it while the worker
handles what it has, and the reply waits in the socket.

No thread: a lane thread (``lanes.py``, the cluster's) needs the GIL to send and to parse,
and a thread that wakes for each chunk of a large reply waits for the parsing thread's
switch interval (5 ms) each time; measured, it cost more than it saved (docs/performance.md).

It has :class:`~tailrace.consumer.lanes.LaneReads`' interface, with one lane: the worker
loop's rules for reads in flight (tickets, cancel before a release or a change of what is
read, a failed read sends its partitions back to their pending entries) apply unchanged.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import redis

from ..errors import BrokerUnavailable
from .lanes import CANCEL_POLL_S, LaneReply, ReadSpec, close_read_connection, open_read_connection

__all__ = ["InlineRead"]


class _Flight(NamedTuple):
    """The read in flight: its lane, the streams it covers, the tag its reply carries."""

    lane: str
    streams: frozenset[str]
    tag: Any


class InlineRead:
    """At most one ``XREADGROUP`` in flight, sent and read on the loop's thread.

    Args:
        client: the worker's client (one server or a Sentinel master; not a cluster).
        group, consumer: the XREADGROUP identity.
        count: entries per stream per read.
        block_ms: how long a read may block server-side.
    """

    def __init__(self, client: redis.Redis, group: str, consumer: str, *, count: int,
                 block_ms: int) -> None:
        self.client = client
        self.spec = ReadSpec(group, consumer, count, block_ms)
        self._conn: Any = None  # with its CLIENT ID while open
        self._client_id = 0
        self._flight: _Flight | None = None
        self._ready: list[LaneReply] = []

    # -- state ----------------------------------------------------------------------------
    def in_flight(self) -> dict[str, frozenset[str]]:
        """Lane -> the streams the read in flight covers (empty: none)."""
        f = self._flight
        return {f.lane: f.streams} if f is not None else {}

    def has_ready(self) -> bool:
        return bool(self._ready)

    # -- reads ----------------------------------------------------------------------------
    def issue(self, lane: str, streams: list[str], tag: Any) -> None:
        """Send a blocking read of ``streams``; its reply is read by :meth:`collect`.

        ``tag`` comes back with the reply. A send that fails gives an error reply (the
        read may have reached the server: its partitions re-read their pending entries).
        """
        if self._flight is not None:
            raise RuntimeError(f"lane {lane} already has a read in flight")
        self._flight = _Flight(lane, frozenset(streams), tag)
        try:
            if self._conn is None:
                self._open()
            self._conn.send_command(*self.spec.command(streams))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the worker loop
            self._fail(exc)

    def collect(self, timeout_s: float) -> list[LaneReply]:
        """The reply of the read in flight (a reply kept by :meth:`cancel` first).

        The read blocks on the server for at most ``block_ms``; ``timeout_s`` is not needed
        for that, and the connection's socket timeout bounds a server that stops answering.
        """
        if not self._ready and self._flight is not None:
            self._read()
        out, self._ready = self._ready, []
        return out

    def cancel(self, lane: str) -> None:
        """End the read in flight now; its reply is kept for :meth:`collect`.

        ``CLIENT UNBLOCK`` from the worker's other connection makes a blocked read return at
        once (with whatever it had, usually nothing). A read the server has not blocked yet
        is unblocked again shortly after; past a block's time, its connection is cut (the
        read's partitions then re-read their pending entries). Returns once the reply is in.
        """
        deadline = time.monotonic() + self.spec.cancel_deadline_s
        while self._flight is not None:
            try:
                if self._conn.can_read(timeout=0):
                    self._read()
                    return
                if time.monotonic() > deadline:
                    raise BrokerUnavailable("a cancelled read did not return within its "
                                            "block time; its connection was cut")
                self.client.client_unblock(self._client_id)
                if self._conn.can_read(timeout=CANCEL_POLL_S):
                    self._read()
                    return
            except Exception as exc:  # noqa: BLE001 - the read is cut; the loop re-reads pending
                self._fail(exc)

    def reset(self) -> None:
        """Drop the connection (after a broker error): a read in flight is cut and its reply
        ignored; the next :meth:`issue` opens a new connection."""
        self._flight = None
        self._ready.clear()
        self._drop()

    def close(self) -> None:
        """Cancel the read in flight (its entries stay pending here), then drop it all."""
        try:
            self.cancel(self._flight.lane if self._flight else "")
        except (redis.exceptions.RedisError, OSError):
            pass  # closing anyway
        self.reset()

    # -- plumbing -------------------------------------------------------------------------
    def _open(self) -> None:
        self._conn, self._client_id = open_read_connection(self.client)

    def _read(self) -> None:
        """Read the reply of the read in flight into the ready list."""
        try:
            client: Any = self.client  # redis-py's parse_response is untyped
            result = client.parse_response(self._conn, "XREADGROUP")
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the worker loop
            self._fail(exc)
            return
        assert self._flight is not None
        self._ready.append(LaneReply(self._flight.lane, self._flight.tag, result=result or []))
        self._flight = None

    def _fail(self, exc: BaseException) -> None:
        """The read in flight failed or was cut: an error reply, and a fresh connection next."""
        assert self._flight is not None
        self._ready.append(LaneReply(self._flight.lane, self._flight.tag, error=exc))
        self._flight = None
        self._drop()

    def _drop(self) -> None:
        conn, self._conn, self._client_id = self._conn, None, 0
        if conn is not None:
            close_read_connection(self.client, conn)

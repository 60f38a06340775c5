"""Blocking XREADGROUP over streams that no single command may read together.

One server reads all of a worker's streams in one ``XREADGROUP … BLOCK`` call. A Redis
Cluster cannot: it refuses any command whose keys hash to different slots, even on one
node (``CROSSSLOT``), and every partition has its own hash tag. So on a cluster each
partition is a *lane*: its blocking read runs on a connection of its own (a blocked
connection cannot serve anything else), in a small thread that waits in the kernel, and the
worker loop wakes up as soon as any lane answers. Nothing polls: an idle lane costs one
blocked connection and a sleeping thread.

A read stays in flight while the worker processes what other lanes returned. Before a
partition changes hands or goes back to its pending entries, the worker *cancels* the
read of its lane (``CLIENT UNBLOCK`` from another connection) and waits for the reply, so
no read can deliver entries after the partition was released; replies are tagged with
what the worker attached when it issued the read, so it can tell a stale reply from a
current one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from ..topology import node_client, node_of

__all__ = ["LaneReads", "LaneReply", "ReadSpec"]

log = logging.getLogger(__name__)

#: How often a cancel asks again while a read it unblocked has not answered yet.
CANCEL_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class ReadSpec:
    """Who reads new entries, how many, and how long a read may block server-side."""

    group: str
    consumer: str
    count: int  # entries per stream per read
    block_ms: int

    def command(self, streams: list[str]) -> list[Any]:
        """The blocking ``XREADGROUP … >`` of ``streams``."""
        return ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count,
                "BLOCK", self.block_ms, "STREAMS", *streams, *([">"] * len(streams))]

    @property
    def cancel_deadline_s(self) -> float:
        """How long a cancelled read may take to come back before its connection is cut."""
        return self.block_ms / 1000 + 1.0


def open_read_connection(client: Any) -> tuple[Any, int]:
    """A connection of its own out of ``client``'s pool, and its ``CLIENT ID`` (what
    ``CLIENT UNBLOCK`` from another connection names to end a read blocked on it)."""
    conn: Any = client.connection_pool.get_connection()
    try:
        conn.send_command("CLIENT", "ID")
        return conn, int(conn.read_response())
    except BaseException:
        close_read_connection(client, conn)
        raise


def close_read_connection(client: Any, conn: Any) -> None:
    """Close a connection of :func:`open_read_connection` (a read blocked on it is cut:
    the server drops it) and hand it back to its pool."""
    conn.disconnect()
    try:
        client.connection_pool.release(conn)
    except (redis.exceptions.RedisError, OSError, ValueError):
        pass  # a pool that was reset meanwhile: the connection is closed anyway


@dataclass
class LaneReply:
    """What one lane's read returned: the parsed XREADGROUP reply, or the error it raised."""

    lane: str
    tag: Any
    result: list[Any] | None = None
    error: BaseException | None = None


class _Lane(threading.Thread):
    """A thread with a dedicated connection that runs one lane's blocking reads in order."""

    def __init__(self, owner: LaneReads, lane: str, client: redis.Redis) -> None:
        super().__init__(name=f"read-{lane}", daemon=True)
        self.owner = owner
        self.lane = lane
        self.client: Any = client  # a plain client of the node that serves the lane
        self.jobs: queue.SimpleQueue[tuple[list[Any], Any] | None] = queue.SimpleQueue()
        self.conn: Any = None
        self.client_id: int | None = None
        #: Set by :meth:`retire`: no read may be sent on this lane any more.
        self.retired = False
        self._lock = threading.Lock()  # conn, client_id, retired; held over a read's send

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                break
            args, tag = job
            try:
                # The send happens under the lock, after the retired check: once retire()
                # returns, this lane cannot put a read on the server. A read sent after a
                # reset would be served entries nobody processes: they would stay pending
                # on this consumer, behind the re-read of its pending entries.
                with self._lock:
                    if self.retired:
                        break
                    if self.conn is None:
                        self._open()
                    conn = self.conn
                    conn.send_command(*args)
                result = self.client.parse_response(conn, "XREADGROUP")
                reply = LaneReply(self.lane, tag, result=result or [])
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the worker loop
                self.drop()
                reply = LaneReply(self.lane, tag, error=exc)
            self.owner.replies.put((self, reply))
        self.drop()

    def _open(self) -> None:
        self.conn, self.client_id = open_read_connection(self.client)

    def retire(self) -> None:
        """Close the connection and send no read any more (a read already sent is cut: the
        server drops a blocked read whose connection closed)."""
        with self._lock:
            self.retired = True
        self.drop()

    def drop(self) -> None:
        """Close the dedicated connection (interrupts a read blocked on it); idempotent."""
        with self._lock:
            conn, self.conn, self.client_id = self.conn, None, None
        if conn is not None:
            close_read_connection(self.client, conn)


class LaneReads:
    """At most one blocking XREADGROUP in flight per lane; replies gathered as they come.

    Args:
        client: the worker's client (one server, Sentinel master or cluster).
        group, consumer: the XREADGROUP identity.
        count: entries per stream per read.
        block_ms: how long a read may block server-side.

    Only the worker loop's thread calls these methods.
    """

    def __init__(self, client: redis.Redis, group: str, consumer: str, *, count: int,
                 block_ms: int) -> None:
        self.client = client
        self.spec = ReadSpec(group, consumer, count, block_ms)
        self.replies: queue.SimpleQueue[tuple[_Lane, LaneReply]] = queue.SimpleQueue()
        self._lanes: dict[str, _Lane] = {}
        self._in_flight: dict[str, frozenset[str]] = {}  # lane -> streams being read
        self._ready: list[LaneReply] = []

    # -- state ----------------------------------------------------------------------------
    def in_flight(self) -> dict[str, frozenset[str]]:
        """Lane -> the streams its read in flight covers."""
        return dict(self._in_flight)

    def has_ready(self) -> bool:
        return bool(self._ready)

    # -- reads ----------------------------------------------------------------------------
    def issue(self, lane: str, streams: list[str], tag: Any) -> None:
        """Start a blocking read of ``streams`` (all served by one node) on ``lane``.

        ``tag`` comes back with the reply. A lane with a read in flight is not reissued.
        """
        if lane in self._in_flight:
            raise RuntimeError(f"lane {lane} already has a read in flight")
        worker = self._lanes.get(lane)
        if worker is None or not worker.is_alive():
            node = node_client(self.client, node_of(self.client, streams[0]))
            worker = self._lanes[lane] = _Lane(self, lane, node)
            worker.start()
        args = self.spec.command(streams)
        self._in_flight[lane] = frozenset(streams)
        worker.jobs.put((args, tag))

    def collect(self, timeout_s: float) -> list[LaneReply]:
        """Replies that arrived, waiting up to ``timeout_s`` for the first when there is none.

        Never busy-waits: it sleeps on a queue the lane threads fill.
        """
        out, self._ready = self._ready, []
        if not out and self._in_flight:
            try:
                out.append(self._take(timeout_s))
            except queue.Empty:
                return []
        while True:
            try:
                out.append(self._take(0))
            except queue.Empty:
                return out

    def _take(self, timeout_s: float) -> LaneReply:
        """The next reply of a current lane (replies of lanes dropped by reset() are ignored).

        Raises:
            queue.Empty: none within ``timeout_s``.
        """
        end = time.monotonic() + timeout_s
        while True:
            left = end - time.monotonic()
            worker, reply = (self.replies.get(timeout=left) if left > 0
                             else self.replies.get_nowait())
            if self._lanes.get(reply.lane) is worker:
                self._in_flight.pop(reply.lane, None)
                return reply

    def cancel(self, lane: str) -> None:
        """End the read in flight on ``lane`` now; its reply is kept for :meth:`collect`.

        ``CLIENT UNBLOCK`` from another connection makes the blocked read return at once
        (with whatever it had, usually nothing). A read the server has not blocked yet is
        unblocked again shortly after; one that cannot be reached is cut by closing its
        connection. Returns once the reply is in, so nothing reads on the lane afterwards.
        """
        if lane not in self._in_flight:
            return
        worker = self._lanes[lane]
        deadline = time.monotonic() + self.spec.cancel_deadline_s
        while lane in self._in_flight:
            cid = worker.client_id
            if time.monotonic() > deadline:
                worker.drop()
            elif cid is not None:
                try:
                    worker.client.client_unblock(cid)
                except (redis.exceptions.RedisError, OSError):
                    worker.drop()  # the node is unreachable: cut the read instead
            self._wait_for(lane, CANCEL_POLL_S)

    def _wait_for(self, lane: str, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while lane in self._in_flight:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                self._ready.append(self._take(left))
            except queue.Empty:
                return

    def reset(self) -> None:
        """Drop every lane and its connection (after a broker error or a topology change).

        Replies still on their way are ignored; new lanes are opened on the next
        :meth:`issue`, against the nodes that serve the streams then. No dropped lane sends
        a read after this returns (a read issued just before, whose thread had not sent it
        yet, used to be sent on a new connection: entries it was served stayed pending on
        this consumer, unseen, while the partition read on).
        """
        lanes, self._lanes = self._lanes, {}
        self._in_flight.clear()
        self._ready.clear()
        for worker in lanes.values():
            worker.jobs.put(None)
            worker.retire()

    def close(self) -> None:
        """Cancel every read in flight, then stop the lanes."""
        for lane in list(self._in_flight):
            try:
                self.cancel(lane)
            except (redis.exceptions.RedisError, OSError):
                pass  # closing anyway: reset() cuts what is left
        self.reset()

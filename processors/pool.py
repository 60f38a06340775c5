"""Helper processes for one processor worker: the entries of a read handled side by side.

A partition is one worker's at a time (its lease), and one file's lines all go to one
partition, so a single busy file kept one processor core busy and left the other idle.
With ``service.processor_helpers: N`` a processor worker forks N helpers when it starts;
each builds its own filter chain from the same config and handles whole entries sent over
a socket pair. The worker keeps everything else: reads, leases, the fenced commit (one
per read, outputs in the entries' order), poison and failure counting. The helpers never
talk to Redis, except through a throttle filter's shared windows (each has its own
connection, redis-py reconnects after the fork).

A helper that dies (a crash in a filter, the OOM killer) fails only the entries it had:
the worker counts that as a failure of the batch (retried, dead-lettered after
``max_deliveries``, as a handler error is) and forks a new helper. Helpers end when the
worker closes them, and on their own when the worker is gone (their socket reaches EOF).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

import msgpack

from tailrace.config import Config
from tailrace.handler import Entry, HandleResult, LeaseGuard
from tailrace.lifecycle import ThreadRecord
from tailrace.logs import event
from tailrace.ratelimit import RateLimits
from tailrace.scriptcalls import DeadLetter

from .worker import ProcessorHandler

__all__ = ["HelperDied", "PooledHandler"]

log = logging.getLogger(__name__)


class HelperDied(RuntimeError):
    """A helper process ended while it held entries (they stay pending: retried)."""


_LEN = struct.Struct("!I")


class _Channel:
    """Length-prefixed frames over one end of a socket pair.

    A raw batch and a processed payload travel as frames of their own, not inside a msgpack
    message: each is copied once by the kernel into a bytes object of its exact size
    (``MSG_WAITALL``), and never again on either side.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            self.sock.sendall(_LEN.pack(len(frame)))
            self.sock.sendall(frame)

    def recv(self) -> bytes:
        (n,) = _LEN.unpack(self._exactly(_LEN.size))
        return self._exactly(n)

    def _exactly(self, n: int) -> bytes:
        if not n:
            return b""
        data = self.sock.recv(n, socket.MSG_WAITALL)
        if len(data) == n:
            return data
        # Short: the other end closed, or a signal handled here cut the wait short.
        buf = bytearray(data)
        while data and len(buf) < n:
            data = self.sock.recv(n - len(buf), socket.MSG_WAITALL)
            buf += data
        if len(buf) != n:
            raise EOFError("the other end closed the socket")
        return bytes(buf)

    def close(self) -> None:
        self.sock.close()


@dataclass
class _Helper:
    pid: int
    conn: _Channel


class _FencedAtCommit:
    """A helper cannot see the worker's lease; it need not: what it makes only reaches
    Redis through the worker's fenced commit (the processor chain has no other effect)."""

    def valid(self, partition: int) -> bool:
        return True


_FENCED_AT_COMMIT = _FencedAtCommit()


def _serve(conn: _Channel, config: Config, rate_limits: RateLimits | None) -> None:
    """A helper's loop. In: a header (partition, entry id, the entry's other fields) and the
    raw payload. Out: a header (True, the number of outputs, dead letters, counts, the
    counters the filters added) and each output; or (False, the error)."""
    status = ThreadRecord("helper", "processor")
    handler = ProcessorHandler(config, status, rate_limits=rate_limits)
    never = threading.Event()  # a helper is stopped by its socket closing, not by an event
    while True:
        try:
            head, payload = conn.recv(), conn.recv()
        except (EOFError, OSError):
            return  # the worker closed us, or is gone
        partition, entry_id, fields = msgpack.unpackb(head, raw=True)
        fields[b"b"] = payload
        status.counters.clear()
        try:
            res = handler.handle(partition, [(entry_id, fields)],
                                 LeaseGuard(_FENCED_AT_COMMIT, partition, never))
        except Exception as exc:  # the worker counts it as this batch's failure
            conn.send(msgpack.packb([False, repr(exc)], use_bin_type=True))
            continue
        dls = [[d.kind, d.payload, d.stage, d.plugin, d.error, d.source, d.version]
               for d in res.dead_letters]
        conn.send(msgpack.packb([True, len(res.outputs), dls, res.lines_in, res.lines_out,
                                 res.bytes_in, dict(status.counters)], use_bin_type=True),
                  *res.outputs)


class PooledHandler:
    """A :class:`~processors.worker.ProcessorHandler` whose entries go to helper processes.

    Entries of one call are spread over the helpers (each takes the next as soon as it is
    free) and their results put back in order, so the worker's commit is the one a single
    handler would make.
    """

    overlap_commits = True  # pure, and its CPU is the helpers': commits may stay in flight

    def __init__(self, config: Config, status: ThreadRecord, *, helpers: int,
                 rate_limits: RateLimits | None = None) -> None:
        if helpers < 1:
            raise ValueError("a pool needs at least one helper")
        self.config = config
        self.status = status
        self.rate_limits = rate_limits
        self.helpers: list[_Helper] = []
        for _ in range(helpers):
            self.helpers.append(self._fork())

    def _fork(self) -> _Helper:
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the helper: serve until EOF, never return into the worker's code
            code = 0
            try:
                mine.close()
                for other in self.helpers:  # only the worker may hold their ends: EOF there
                    other.conn.close()  # must mean the worker is gone
                # A stop signalled to the whole group is the worker's to drain; a helper
                # ends when its socket closes (then its batch in hand is answered).
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                _serve(_Channel(theirs), self.config, self.rate_limits)
            except BaseException:  # noqa: BLE001  say nothing twice: the worker reports it
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        return _Helper(pid, _Channel(mine))

    def on_acquire(self, partition: int, checkpoints: list[Mapping[bytes, bytes]]) -> None:
        return None  # processors keep no state outside Redis

    def on_committed(self, partition: int) -> None:
        return None

    def handle(self, partition: int, entries: list[Entry], guard: LeaseGuard) -> HandleResult:
        """Each helper takes the next entry as soon as it answered its last one (one request
        in flight per helper: a helper blocked on a full socket while the worker is blocked
        sending to it would be a deadlock); the replies are merged in the entries' order."""
        replies: list[list[Any] | None] = [None] * len(entries)
        failure: BaseException | None = None
        busy: dict[socket.socket, tuple[_Helper, int]] = {}  # by the socket wait() sees
        todo = iter(range(len(entries)))

        def give(helper: _Helper) -> None:
            nonlocal failure
            for i in todo:
                entry_id, fields = entries[i]
                rest = {k: v for k, v in (fields or {}).items() if k != b"b"}
                head = msgpack.packb([partition, entry_id, rest], use_bin_type=True)
                try:
                    helper.conn.send(head, (fields or {}).get(b"b", b""))
                except OSError as exc:  # it died since its last reply (replaced: try again)
                    failure = failure or self._died(helper, entry_id, exc)
                    continue
                busy[helper.conn.sock] = (helper, i)
                return

        for helper in self.helpers:
            give(helper)
        while busy:
            for ready in wait(list(busy)):
                helper, i = busy.pop(ready)  # type: ignore[arg-type]  # one of busy's sockets
                try:  # every reply is read, even after a failure: the next call starts clean
                    replies[i] = self._receive(helper, entries[i][0])
                except (HelperDied, RuntimeError) as exc:
                    failure = failure or exc
                if failure is None:
                    give(helper)
        if failure is not None:
            raise failure
        out = HandleResult()
        for reply in replies:
            assert reply is not None
            self._merge(out, reply)
        return out

    def _receive(self, helper: _Helper, entry_id: bytes) -> list[Any]:
        try:
            reply: list[Any] = msgpack.unpackb(helper.conn.recv(), raw=False)
            if reply[0]:
                reply[1] = [helper.conn.recv() for _ in range(reply[1])]
        except (EOFError, OSError) as exc:
            raise self._died(helper, entry_id, exc) from None
        if not reply[0]:
            raise RuntimeError(f"entry {entry_id.decode()}: {reply[1]}")
        return reply

    def _merge(self, out: HandleResult, reply: list[Any]) -> None:
        _ok, outputs, dls, lines_in, lines_out, bytes_in, counters = reply
        out.outputs.extend(outputs)
        out.dead_letters.extend(DeadLetter(*d) for d in dls)
        out.lines_in += lines_in
        out.lines_out += lines_out
        out.bytes_in += bytes_in
        for name, n in counters.items():
            self.status.add(name, n)

    def _died(self, helper: _Helper, entry_id: bytes, exc: BaseException) -> HelperDied:
        pid = helper.pid
        self._replace(helper)
        return HelperDied(f"processor helper {pid} ended while handling entry "
                          f"{entry_id.decode()} ({exc or 'EOF'}); it is replaced, and the "
                          "entry is retried")

    def _replace(self, helper: _Helper) -> None:
        helper.conn.close()
        try:
            os.waitpid(helper.pid, 0)
        except ChildProcessError:
            pass
        new = self._fork()
        helper.pid, helper.conn = new.pid, new.conn
        event(log, logging.WARNING, "processor_helper_replaced",
              f"a processor helper ended; forked {new.pid} in its place")

    def close(self) -> None:
        for helper in self.helpers:
            helper.conn.close()  # EOF: it ends
        for helper in self.helpers:
            try:
                os.waitpid(helper.pid, 0)
            except ChildProcessError:
                pass

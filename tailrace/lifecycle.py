"""Lifecycle records: every thread of every worker says what it is doing, with counters.

Each thread registers a :class:`ThreadRecord` in its process's :class:`Lifecycle`; a
publisher thread writes the whole process record to Redis every few seconds under a key
with a TTL (``tr:worker:ID``), so ``tailrace status`` sees live workers and a dead one
disappears. Counters are bumped per batch (``+= len(batch)``), never per line.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
import redis

from .keys import Keys
from .redaction import scrub
from .scriptcalls import Scripts

__all__ = ["STATES", "Lifecycle", "Publisher", "State", "ThreadRecord", "new_worker_id"]


class State(StrEnum):
    """What a thread (and, by its most urgent thread, a process) is doing.

    The values are what status records, metrics and ``tailrace status`` show.
    """

    STARTING = "starting"
    ACTIVE = "active"
    IDLE = "idle"
    THROTTLED = "throttled"
    BROKER_DOWN = "broker_down"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


STATES = tuple(State)
# The state a process shows is its most urgent thread state, in this order.
_URGENCY = (State.FAILED, State.BROKER_DOWN, State.THROTTLED, State.DRAINING, State.STARTING,
            State.ACTIVE, State.IDLE, State.STOPPED)


def new_worker_id(role: str) -> str:
    """A worker id unique to this process life: role, host, pid and a random suffix."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass
class ThreadRecord:
    """What one thread is doing. Written by its thread; read by the publisher."""

    name: str
    role: str
    state: State = State.STARTING
    detail: str = ""
    since: float = field(default_factory=time.time)
    counters: dict[str, int] = field(default_factory=dict)
    # Keeps the process going (main, publisher, lease keeper) rather than doing its work:
    # its 'active' or 'idle' says nothing about whether the process is busy.
    housekeeping: bool = False

    def set_state(self, state: State, detail: str = "") -> None:
        state = State(state)  # an unknown state is a bug: ValueError
        if state != self.state or detail != self.detail:
            self.state, self.detail, self.since = state, detail, time.time()

    def add(self, counter: str, n: int = 1) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + n


class Lifecycle:
    """The lifecycle registry of one process."""

    def __init__(self, role: str, worker_id: str | None = None) -> None:
        self.role = role
        self.id = worker_id or new_worker_id(role)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = time.time()
        self.threads: dict[str, ThreadRecord] = {}
        self.partitions: dict[str, list[int]] = {}
        self.extra: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._last_counters: dict[str, int] = {}
        self._last_time = time.monotonic()
        self._rates: dict[str, float] = {}

    def thread(self, name: str, *, housekeeping: bool = False) -> ThreadRecord:
        with self._lock:
            rec = self.threads.get(name)
            if rec is None:
                rec = self.threads[name] = ThreadRecord(name=name, role=self.role,
                                                        housekeeping=housekeeping)
            return rec

    @property
    def state(self) -> State:
        """The most urgent state of any thread; whether it is ``active`` or ``idle`` is
        up to the threads that do the work."""
        threads = list(self.threads.values())
        states = {t.state for t in threads
                  if not (t.housekeeping and t.state in (State.ACTIVE, State.IDLE))}
        if not states:
            states = {t.state for t in threads}
        for s in _URGENCY:
            if s in states:
                return s
        return State.STARTING

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for t in list(self.threads.values()):
            for k, v in list(t.counters.items()):
                total[k] = total.get(k, 0) + v
        return total

    def snapshot(self, *, update_rates: bool = False) -> dict[str, Any]:
        """The record published to Redis and served on /api/v1/status.

        ``rates`` are lines per second since the previous ``update_rates=True`` call (the
        publisher's), so other readers do not disturb them.
        """
        now = time.monotonic()
        counters = self.counters()
        if update_rates:
            dt = max(now - self._last_time, 1e-6)
            self._rates = {
                f"{k}_per_s": round((v - self._last_counters.get(k, 0)) / dt, 1)
                for k, v in counters.items()
                if k.startswith("lines")
            }
            self._last_counters, self._last_time = counters, now
        rates = dict(self._rates)
        return {
            "id": self.id,
            "role": self.role,
            "host": self.host,
            "pid": self.pid,
            "state": self.state,
            "started": self.started,
            "updated": time.time(),
            "partitions": {g: sorted(p) for g, p in self.partitions.items()},
            "counters": counters,
            "rates": rates,
            "threads": [
                {"name": t.name, "state": t.state, "detail": scrub(t.detail) if t.detail else "",
                 "since": t.since,
                 "counters": dict(t.counters)}
                for t in list(self.threads.values())
            ],
            **self.extra,
        }


class Publisher(threading.Thread):
    """Publishes a process's lifecycle record to ``key`` every ``interval_s`` (TTL 3x)."""

    def __init__(self, lifecycle: Lifecycle, client: redis.Redis, key: str,
                 interval_s: float) -> None:
        super().__init__(name="lifecycle-publisher", daemon=True)
        self.lifecycle = lifecycle
        self.client = client
        self.key = key
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        # A script, so the record is still written when Redis is full (tailrace.scripts).
        self._scripts = Scripts(client, Keys())

    def publish(self) -> None:
        body = orjson.dumps(self.lifecycle.snapshot(update_rates=True))
        self._scripts.publish(self.key, body, int(self.interval_s * 3000))

    def run(self) -> None:
        rec = self.lifecycle.thread("publisher", housekeeping=True)
        rec.set_state(State.ACTIVE)
        first = True
        while first or not self.stop_event.wait(self.interval_s):
            first = False
            try:
                self.publish()
                rec.set_state(State.ACTIVE)
            except (redis.exceptions.RedisError, OSError) as exc:
                rec.set_state(State.BROKER_DOWN, str(exc))
        rec.set_state(State.STOPPED)

    def stop(self, final: bool = True) -> None:
        """Stop publishing; with ``final`` publish the last state once (e.g. ``stopped``)."""
        self.stop_event.set()
        if final:
            try:
                self.publish()
            except (redis.exceptions.RedisError, OSError):
                pass  # the broker is gone; the key expires on its own

"""Rolling restarts while lines flow, as a Kubernetes rollout does them: every processor and
every sink worker replaced one at a time (the new one up before the old one stops: a
Deployment's maxSurge 1, maxUnavailable 0), the agent restarted twice (a DaemonSet: stop,
then start). Nothing lost, nothing doubled, lag back to zero, and the status view shows
each worker leaving and each new one arriving.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from helpers import Role, read_json_lines, wait_for
from stopflow import exit_of, flowing
from test_e2e import assert_exactly_once, pipeline_config

from tailrace.keys import Keys, sink_group
from tailrace.status import collect

pytestmark = pytest.mark.slow

PARTITIONS = 4
SHUTDOWN_S = 10.0


class StatusWatch(threading.Thread):
    """Polls the status document (what ``tailrace status --json`` prints) and keeps, per
    worker pid, the states it was seen in, in order."""

    def __init__(self, client: redis.Redis, keys: Keys, groups: list[str]) -> None:
        super().__init__(daemon=True)
        self.client, self.keys, self.groups = client, keys, groups
        self.seen: dict[int, list[str]] = {}
        self.roles: dict[int, str] = {}
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.halt.wait(0.25):
            doc = collect(self.client, self.keys, PARTITIONS, self.groups)
            with self.lock:
                for w in doc["workers"]:
                    pid = int(w["pid"])
                    self.roles[pid] = str(w["role"])
                    states = self.seen.setdefault(pid, [])
                    if not states or states[-1] != w["state"]:
                        states.append(str(w["state"]))

    def arrived(self, pid: int) -> bool:
        with self.lock:
            return any(s in ("active", "idle") for s in self.seen.get(pid, []))

    def left(self, pid: int) -> bool:
        """Seen at work, then ``stopped`` (its last record, listed until it expires)."""
        with self.lock:
            states = self.seen.get(pid, [])
            return any(s in ("active", "idle") for s in states) and states[-1] == "stopped"


def pid_of(role: Role) -> int:
    assert role.proc is not None
    return role.proc.pid


def test_a_rolling_restart_of_every_worker_and_the_agent_twice_loses_and_doubles_nothing(
        tmp_path: Path, redis_url: str, r: redis.Redis, prefix: str) -> None:
    cfg = pipeline_config(tmp_path, prefix, partitions=PARTITIONS, shutdown_timeout_s=SHUTDOWN_S)
    keys = Keys(prefix)
    groups = [sink_group("all")]
    watch = StatusWatch(r, keys, groups)
    watch.start()
    codes: dict[str, int] = {}
    try:
        with flowing(cfg, rate=2_000, files=3) as flow:
            agent = flow.start("agent", cfg, redis_url)
            procs = [flow.start("processor", cfg, redis_url) for _ in range(2)]
            sinks = [flow.start("sink", cfg, redis_url) for _ in range(2)]
            for role in [agent, *procs, *sinks]:
                wait_for(lambda role=role: watch.arrived(pid_of(role)), timeout=60,
                         message=f"{role.role} {pid_of(role)} in the status view")
            flow.wait_delivered(1_000, "before the rollout")

            def replace(old: Role, what: str) -> Role:
                new = flow.start(old.role, cfg, redis_url)
                wait_for(lambda: watch.arrived(pid_of(new)), timeout=60,
                         message=f"the new {what} ({pid_of(new)}) arriving in status")
                n = flow.delivered()
                assert old.proc is not None
                old.proc.terminate()
                code, took = exit_of(old, timeout=SHUTDOWN_S + 5)
                codes[f"old {what} {pid_of(old)}"] = code
                assert took < SHUTDOWN_S, f"{what} took {took:.1f}s to stop"
                wait_for(lambda: watch.left(pid_of(old)), timeout=30,
                         message=f"the old {what} ({pid_of(old)}) leaving status")
                flow.wait_delivered(n + 500, f"after replacing {what} {pid_of(old)}")
                return new

            procs = [replace(p, "processor") for p in procs]
            sinks = [replace(s, "sink") for s in sinks]
            for round_ in (1, 2):  # a DaemonSet's update: the old agent stops, then the new
                n = flow.delivered()
                assert agent.proc is not None
                agent.proc.terminate()
                code, _ = exit_of(agent, timeout=SHUTDOWN_S + 5)
                codes[f"agent {round_}"] = code
                wait_for(lambda a=agent: watch.left(pid_of(a)), timeout=30,
                         message="the old agent leaving status")
                agent = flow.start("agent", cfg, redis_url)
                wait_for(lambda a=agent: watch.arrived(pid_of(a)), timeout=60,
                         message="the new agent arriving in status")
                flow.wait_delivered(n + 500, f"after agent restart {round_}")
            written = flow.all_written()
            flow.wait_delivered(written, "after the rollout", timeout=120)

            def lag() -> dict[str, int]:
                doc = collect(r, keys, PARTITIONS, groups)
                return {g: int(v["lag"]) for g, v in doc["groups"].items()}

            wait_for(lambda: not any(lag().values()), timeout=30,
                     message=f"lag back to zero (now {lag()})")
            time.sleep(1.0)  # room for a late duplicate to show
            # The command operators run says the same: lag 0, only the new workers, live.
            out = subprocess.run([sys.executable, "-m", "tailrace", "status", "-c", str(cfg),
                                  "--broker", redis_url, "--json"], capture_output=True,
                                 timeout=60, check=True)
            doc: dict[str, Any] = orjson.loads(out.stdout)
            assert all(g["lag"] == 0 for g in doc["groups"].values()), doc["groups"]
            live = {int(w["pid"]) for w in doc["workers"] if w["state"] != "stopped"}
            assert live == {pid_of(x) for x in [agent, *procs, *sinks]}, doc["workers"]
            codes.update(flow.stop_all())
    finally:
        watch.halt.set()
        watch.join(timeout=5)
    assert set(codes.values()) == {0}, codes
    assert_exactly_once(read_json_lines(flow.out), written)
    # Each of the 4 replaced workers and 2 replaced agents was seen leaving, each new one
    # arriving: 5 at the start + 6 new.
    assert len(watch.seen) == 11, watch.seen

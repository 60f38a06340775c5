"""Many hosts, one network fault: Linux network namespaces stand in for machines.

Redis runs in one namespace, agent A in another, agent B with a second processor in a
third, the first processor and the sink in a fourth; all hang off one bridge. Agent A's
link is cut for 20 s while its files keep growing (its packets are dropped, as on a pulled
cable: the agent sees timeouts, not refusals), then restored. Every line of both agents
must arrive exactly once. Needs root and a kernel that allows ``ip netns``; skipped with
the reason otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from helpers import Role, count_lines, read_json_lines, wait_for
from multinode import stop_all, warnings_of
from redis_server import free_port
from test_e2e import pipeline_config

from tailrace.embedded import redis_server_binary
from tailrace.generate import Generator
from tailrace.keys import Keys

pytestmark = pytest.mark.slow

CUT_S = 20.0
RATE = 1_500  # lines/s per agent
TOTAL = 45_000  # per agent: ~30 s of writing, the cut in the middle


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


class Hosts:
    """Namespaces on one bridge, each with one address of ``10.213.N.0/24``."""

    def __init__(self, names: list[str]) -> None:
        self.token = secrets.token_hex(2)
        self.bridge = f"trb{self.token}"
        self.subnet = f"10.213.{int(self.token, 16) % 250}"
        self.ns = {n: f"tr{self.token}{n}" for n in names}
        self.addr = {n: f"{self.subnet}.{i + 1}" for i, n in enumerate(names)}
        self.link = {n: f"tr{self.token}{n}h" for n in names}  # root side of each veth

    def up(self) -> Hosts:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for name, ns in self.ns.items():
            inner = f"tr{self.token}{name}n"
            _ip("netns", "add", ns)
            _ip("link", "add", self.link[name], "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", self.link[name], "master", self.bridge)
            _ip("link", "set", self.link[name], "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[name]}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def cut(self, name: str) -> None:
        """Pull the cable: the bridge port goes down, packets are dropped silently."""
        _ip("link", "set", self.link[name], "down")

    def restore(self, name: str) -> None:
        _ip("link", "set", self.link[name], "up")

    def down(self) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


class NsRole(Role):
    """A role process inside a network namespace (``ip netns exec``)."""

    def __init__(self, ns: str, role: str, config: Path, broker: str) -> None:
        super().__init__(role, config, broker, log=config.parent / f"{role}-{ns}.log")
        self.args = ["ip", "netns", "exec", ns, *self.args]


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"trprobe{secrets.token_hex(2)}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return f"the kernel refused a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = _netns_unavailable()
    if reason:
        pytest.skip(f"multi-host test skipped: {reason}")
    h = Hosts(["redis", "a", "b", "w"])
    try:
        h.up()
    except subprocess.CalledProcessError as exc:
        h.down()
        pytest.skip(f"multi-host test skipped: cannot build the veth/bridge network "
                    f"({' '.join(exc.cmd)}: {exc.stderr.strip()})")
    yield h
    h.down()


@pytest.fixture
def ns_redis(hosts: Hosts, tmp_path: Path) -> Iterator[str]:
    """A redis-server inside the ``redis`` namespace; yields its URL."""
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    proc = subprocess.Popen(
        ["ip", "netns", "exec", hosts.ns["redis"], redis_server_binary(), "--port", str(port),
         "--bind", hosts.addr["redis"], "--protected-mode", "no", "--save", "",
         "--appendonly", "no", "--dir", str(data), "--logfile", "redis.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://{hosts.addr['redis']}:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        wait_for(lambda: _pings(client), timeout=15, message="redis in its namespace")
        yield url
    finally:
        client.close()
        proc.kill()
        proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


def test_an_agent_cut_off_for_20s_loses_and_duplicates_nothing(
        tmp_path: Path, hosts: Hosts, ns_redis: str) -> None:
    prefix = "nets"
    common = {"partitions": 6, "lease_ttl_ms": 3000}
    cfg = {host: pipeline_config(tmp_path / host, prefix, agent_id=f"agent-{host}",
                                 output="../out/all.log", **common)
           for host in ("a", "b", "w")}
    out = tmp_path / "out" / "all.log"
    gens = {h: Generator(tmp_path / h / "logs", files=3, fmt="plain", rate=RATE, total=TOTAL)
            for h in ("a", "b")}
    stop = threading.Event()
    threads = [threading.Thread(target=g.run, args=(stop,), daemon=True) for g in gens.values()]
    roles = [NsRole(hosts.ns["w"], "processor", cfg["w"], ns_redis),
             NsRole(hosts.ns["w"], "sink", cfg["w"], ns_redis),
             NsRole(hosts.ns["b"], "processor", cfg["b"], ns_redis),
             NsRole(hosts.ns["a"], "agent", cfg["a"], ns_redis),
             NsRole(hosts.ns["b"], "agent", cfg["b"], ns_redis)]
    for role in roles:
        role.start()
    agent_a = roles[3]
    client = redis.Redis.from_url(ns_redis)

    def committed_by_a() -> int:
        """Bytes agent A has committed to Redis (PRODUCE moves these offsets)."""
        keys = Keys(prefix)
        return sum(int(v) for p in range(6)
                   for f, v in client.hgetall(keys.offsets(p)).items()
                   if f.startswith(b"agent-a:"))

    def delivered() -> Counter[str]:
        return Counter("a" if "/a/logs/" in str(r.get("_tag", "")).replace(".", "/") else "b"
                       for r in read_json_lines_safe(out))

    for t in threads:
        t.start()
    try:
        wait_for(lambda: min(delivered().values(), default=0) >= 3_000 and
                 len(delivered()) == 2, timeout=60, interval=0.25,
                 message="both agents' lines flowing")
        hosts.cut("a")
        cut_at = time.monotonic()
        time.sleep(1.0)  # a PRODUCE agent A had on the wire may still land
        a_bytes, during = committed_by_a(), delivered()
        time.sleep(max(0.0, cut_at + CUT_S - time.monotonic()))
        a_bytes_after, after_cut = committed_by_a(), delivered()
        hosts.restore("a")
        restored_at = time.monotonic()
        # While A was cut off it committed nothing, and B went on.
        assert a_bytes_after == a_bytes, "agent A committed through a cut link?"
        assert after_cut["b"] - during["b"] >= RATE * 10, "agent B stalled during A's cut"
        for t in threads:
            t.join(timeout=60)
        assert all(g.written == TOTAL for g in gens.values())
        try:
            wait_for(lambda: count_lines(out) >= 2 * TOTAL, timeout=90, interval=0.25,
                     message=f"all {2 * TOTAL} lines after the link came back")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {delivered()}\n{warnings_of(roles)}") from None
        caught_up = time.monotonic() - restored_at
        time.sleep(1.5)  # late duplicates would show up now
        assert "agent_broker_error" in agent_a.output(), "agent A never noticed the cut"
    finally:
        stop.set()
        for g in gens.values():
            g.close()
        client.close()
        codes = stop_all(roles)
    assert all(c == 0 for c in codes.values()), (codes, warnings_of(roles))
    records = read_json_lines(out)
    ids = Counter(str(r["_id"]) for r in records)
    dups = {k: n for k, n in ids.items() if n > 1}
    assert not dups, f"{len(dups)} duplicated, e.g. {list(dups.items())[:3]}"
    lines = Counter((str(r["_tag"]), str(r["path"])) for r in records)
    assert len(lines) == 2 * TOTAL == len(records), (len(lines), len(records))
    assert delivered() == {"a": TOTAL, "b": TOTAL}
    assert caught_up < 60, f"agent A took {caught_up:.0f}s to catch up"


def read_json_lines_safe(path: Path) -> list[dict[str, object]]:
    """The complete lines of a file the sink may be writing right now."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [orjson.loads(line) for line in data.split(b"\n")[:-1] if line]

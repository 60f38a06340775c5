"""Real multi-node Redis deployments for tests: a Redis Cluster, and Sentinel with replicas.

Every server is a ``redis-server`` process of its own (free port on loopback, own data dir,
killable), built on :class:`redis_server.RedisServer`. ``stop()`` kills every process this
module started, so fixtures call it in their finalizers.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis_server import RedisServer, free_port

from tailrace.embedded import redis_server_binary

__all__ = ["ClusterUnderTest", "SentinelProcess", "SentinelUnderTest", "redis_cli_binary"]


def redis_cli_binary() -> str:
    """``redis-cli`` next to the server binary, else on PATH (needed for ``--cluster create``)."""
    server = Path(redis_server_binary())
    sibling = server.with_name("redis-cli")
    if sibling.exists():
        return str(sibling)
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("redis-cli not found: it creates the test cluster")
    return found


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too (both below 65536)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():  # type: ignore[operator]
                return
        except (redis.exceptions.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class ClusterUnderTest:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on loopback.

    Args:
        base_dir: one sub-directory per node (its nodes.conf, log, append-only files).
        node_timeout_ms: ``cluster-node-timeout``; a killed master's replica takes over
            about two of these after the kill.
        extra: more ``redis-server`` arguments for every node (e.g. ``min-replicas-to-write``).
    """

    def __init__(self, base_dir: Path, *, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000, appendonly: bool = False,
                 extra: list[str] | None = None) -> None:
        self.base_dir = base_dir
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-replica-validity-factor", "0", "--protected-mode", "no",
                "--repl-diskless-sync-delay", "0", *(extra or [])]
        self.servers = [
            RedisServer(base_dir / f"node{i}", appendonly=appendonly, appendfsync="everysec",
                        port=cluster_port(), extra=args)
            for i in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def start(self, timeout: float = 60.0) -> ClusterUnderTest:
        for s in self.servers:
            s.start()
        if self.masters == 1 and self.replicas == 0:
            # redis-cli refuses to create a cluster of fewer than 3 masters; one node that
            # serves every slot is still a cluster (the client and CROSSSLOT rules apply).
            c = self.servers[0].client()
            try:
                for lo in range(0, 16384, 1024):
                    c.execute_command("CLUSTER", "ADDSLOTS", *range(lo, lo + 1024))
            finally:
                c.close()
            self.wait_healthy(timeout)
            return self
        addrs = [f"127.0.0.1:{s.port}" for s in self.servers]
        out = subprocess.run(
            [redis_cli_binary(), "--cluster", "create", *addrs, "--cluster-replicas",
             str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")
        self.wait_healthy(timeout)
        _wait(self._replicas_online, timeout, "every replica to finish its first sync")
        return self

    def _replicas_online(self) -> bool:
        for m in self.master_servers():
            c = m.client()
            try:
                info = c.info("replication")
            finally:
                c.close()
            links = [info.get(f"slave{i}") for i in range(self.replicas)]
            if not all(isinstance(x, dict) and x.get("state") == "online" for x in links):
                return False
        return True

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every live node says ``cluster_state:ok`` and knows the expected masters."""

        def ok() -> bool:
            for s in self.live():
                c = s.client()
                try:
                    info = c.cluster("info")
                    if info.get("cluster_state") != "ok":
                        return False
                    if int(info.get("cluster_size", 0)) != self.masters:
                        return False
                finally:
                    c.close()
            return len(self.master_servers()) == self.masters

        _wait(ok, timeout, "the cluster to be healthy")

    def live(self) -> list[RedisServer]:
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None]

    def role(self, server: RedisServer) -> str:
        c = server.client()
        try:
            return str(c.info("replication")["role"])
        finally:
            c.close()

    def master_servers(self) -> list[RedisServer]:
        return [s for s in self.live() if self.role(s) == "master"]

    def master_of(self, key: str) -> RedisServer:
        """The live server that is master of ``key``'s slot now."""
        c = self.live()[0].client()
        try:
            slot = int(c.cluster("keyslot", key))
            for lo, hi, master, *_ in c.cluster("slots"):
                if lo <= slot <= hi:
                    port = int(master[1])
                    return next(s for s in self.servers if s.port == port)
        finally:
            c.close()
        raise RuntimeError(f"no master for slot of {key!r}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        for s in self.live():
            if s is master:
                continue
            c = s.client()
            try:
                info = c.info("replication")
            finally:
                c.close()
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                return s
        raise RuntimeError(f"no live replica of 127.0.0.1:{master.port}")

    def kill_master_and_wait_failover(self, master: RedisServer, timeout: float = 30.0
                                      ) -> RedisServer:
        """SIGKILL ``master``; return its replica once promoted and the cluster is ok again."""
        replica = self.replica_of(master)
        master.kill()
        _wait(lambda: self.role(replica) == "master", timeout, "the replica's promotion")
        self.wait_healthy(timeout)
        return replica

    def stop(self) -> None:
        for s in self.servers:
            s.kill()


class SentinelProcess:
    """One ``redis-server --sentinel`` watching ``service`` at ``master_port``."""

    def __init__(self, data_dir: Path, service: str, master_port: int, *,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000,
                 quorum: int = 2) -> None:
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile sentinel.log\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 1\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> SentinelProcess:
        self.proc = subprocess.Popen(
            [redis_server_binary(), str(self.conf), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sentinel exited; see {self.dir / 'sentinel.log'}")
            c = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
            try:
                return bool(c.ping())
            finally:
                c.close()

        _wait(answers, timeout, f"sentinel on port {self.port}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


class SentinelUnderTest:
    """A master, ``replicas`` replicas and ``sentinels`` sentinels on loopback.

    Args:
        extra: more ``redis-server`` arguments for the data nodes (master and replicas).
    """

    def __init__(self, base_dir: Path, *, service: str = "tailrace", replicas: int = 1,
                 sentinels: int = 3, appendonly: bool = False,
                 extra: list[str] | None = None) -> None:
        self.base_dir = base_dir
        self.service = service
        args = ["--protected-mode", "no", "--repl-diskless-sync-delay", "0", *(extra or [])]
        self.master = RedisServer(base_dir / "master", appendonly=appendonly, extra=args)
        self.replicas = [
            RedisServer(base_dir / f"replica{i}", appendonly=appendonly,
                        extra=[*args, "--replicaof", "127.0.0.1", str(self.master.port)])
            for i in range(replicas)
        ]
        self.sentinels = [
            SentinelProcess(base_dir / f"sentinel{i}", service, self.master.port)
            for i in range(sentinels)
        ]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self, timeout: float = 30.0) -> SentinelUnderTest:
        self.master.start()
        for r in self.replicas:
            r.start()

        def synced() -> bool:
            c = self.master.client()
            try:
                info = c.info("replication")
            finally:
                c.close()
            states = [info.get(f"slave{i}", {}) for i in range(len(self.replicas))]
            return all(isinstance(s, dict) and s.get("state") == "online" for s in states)

        _wait(synced, timeout, "the replicas to sync")
        for s in self.sentinels:
            s.start()
        _wait(lambda: self.sentinels_agree(self.master.port), timeout,
              "every sentinel to know the master and its replicas")
        return self

    def sentinel_view(self, sentinel: SentinelProcess) -> tuple[int, int]:
        """(master port, number of known replicas) as ``sentinel`` sees it."""
        c = redis.Redis(host="127.0.0.1", port=sentinel.port, socket_timeout=2,
                        decode_responses=True)
        try:
            host, port = c.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
            replicas = c.execute_command("SENTINEL", "replicas", self.service)
            return int(port), len(replicas)
        finally:
            c.close()

    def sentinels_agree(self, port: int) -> bool:
        live = [s for s in self.sentinels if s.proc is not None]
        return all(self.sentinel_view(s) == (port, len(self.replicas)) for s in live)

    def current_master(self) -> RedisServer:
        for s in self.servers:
            if s.proc is None:
                continue
            c = s.client()
            try:
                if c.info("replication")["role"] == "master":
                    return s
            finally:
                c.close()
        raise RuntimeError("no live master")

    def kill_master_and_wait_failover(self, timeout: float = 30.0) -> RedisServer:
        """SIGKILL the master; return the replica the sentinels promoted."""
        old = self.current_master()
        old.kill()

        def promoted() -> bool:
            port = self.sentinel_view(next(s for s in self.sentinels if s.proc))[0]
            if port == old.port:
                return False
            new = next(s for s in self.servers if s.port == port)
            c = new.client()
            try:
                return bool(c.info("replication")["role"] == "master")
            finally:
                c.close()

        _wait(promoted, timeout, "the sentinels to promote a replica")
        new = self.current_master()
        # Every sentinel must know before the old master may come back: one that still
        # believes in it would vote it back in (empty, without persistence).
        live = [s for s in self.sentinels if s.proc is not None]
        _wait(lambda: all(self.sentinel_view(s)[0] == new.port for s in live), timeout,
              "every sentinel to know the new master")
        return new

    def stop(self) -> None:
        for s in self.sentinels:
            s.kill()
        for s in self.servers:
            s.kill()

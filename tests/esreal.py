"""Real Elasticsearch and OpenSearch servers for tests and benches, from Maven Central.

Both projects publish an integration-test distribution as a zip artifact
(``org.elasticsearch.distribution.integ-test-zip:elasticsearch:<v>:zip``,
``org.opensearch.distribution.integ-test-zip:opensearch:<v>:zip``). :func:`unpacked` fetches
one with ``mvn dependency:get`` into ``~/.m2`` (once) and unpacks it into
``~/.cache/tailrace/es/<product>-<version>`` (once); :class:`RealServer` runs it as a
single-node server on a free loopback port, with its config, data and logs under a folder of
the caller (so the unpacked tree is shared and never written), security off, a small heap
and the disk watermarks off. It runs in a process group of its own: :meth:`RealServer.stop`
ends the whole group (Elasticsearch 8 is a launcher JVM plus the server JVM).

    python tests/esreal.py es8 [setting=value ...]   # start one, print its URL; Ctrl-C stops
    python tests/esreal.py --fetch                   # fetch and unpack them all (CI)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import urllib3

__all__ = ["SERVERS", "RealServer", "ServerSpec", "Unavailable", "unpacked"]

CACHE = Path(os.environ.get("TAILRACE_ES_CACHE", Path.home() / ".cache" / "tailrace" / "es"))
JAVA17 = "/usr/lib/jvm/java-17-openjdk-amd64"
TEMURIN = "/usr/lib/jvm/temurin-25-jdk-amd64"


@dataclass(frozen=True)
class ServerSpec:
    """One server to test against: where Maven has it and which Java runs it."""

    key: str
    product: str  # "elasticsearch" or "opensearch"
    version: str
    java_home: str
    note: str = ""  # what is known about it, said when it cannot be had

    @property
    def coordinates(self) -> str:
        group = f"org.{self.product}.distribution.integ-test-zip"
        return f"{group}:{self.product}:{self.version}:zip"

    @property
    def zip_path(self) -> Path:
        group = f"org/{self.product}/distribution/integ-test-zip/{self.product}"
        m2 = Path(os.environ.get("TAILRACE_M2_REPO", Path.home() / ".m2" / "repository"))
        return m2 / group / self.version / f"{self.product}-{self.version}.zip"

    @property
    def home(self) -> Path:
        return CACHE / f"{self.product}-{self.version}"

    @property
    def label(self) -> str:
        name = "Elasticsearch" if self.product == "elasticsearch" else "OpenSearch"
        return f"{name} {self.version}"


# The newest of each line that Maven Central serves as an integ-test zip (checked 2026-12-01:
# the Elasticsearch metadata lists nothing past 8.19.21, no 9.x; OpenSearch's newest 3.x is
# 3.6.0). OpenSearch 3 needs Java 21+: the Temurin JDK beside the default 17.
SERVERS = {
    "es8": ServerSpec("es8", "elasticsearch", "8.19.21", JAVA17),
    "os2": ServerSpec("os2", "opensearch", "2.19.6", JAVA17),
    "os3": ServerSpec("os3", "opensearch", "3.6.0", TEMURIN),
}
# Asked for and not served (kept so the tier says so instead of forgetting it).
UNSERVED = {
    "es9": ServerSpec("es9", "elasticsearch", "9.5.6", TEMURIN,
                      note="Maven Central's maven-metadata.xml of this artifact lists no 9.x "
                           "(newest 8.19.21)"),
}


class Unavailable(Exception):
    """The server cannot be had here (no Java, no Maven, artifact not served): why, exactly."""


def _fetch(spec: ServerSpec) -> None:
    if shutil.which("mvn") is None:
        raise Unavailable(f"{spec.label}: mvn is not on PATH (needed to fetch "
                          f"{spec.coordinates})")
    # -U: ask again even where an earlier miss is cached (a newly published version).
    cmd = ["mvn", "-B", "-q", "-U", "dependency:get", f"-Dartifact={spec.coordinates}",
           "-Dtransitive=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not spec.zip_path.exists():
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in proc.stdout.splitlines()]
        errors = [ln for ln in lines if ln.startswith("[ERROR]") and len(ln) > 10][:1]
        raise Unavailable(f"{spec.label}: `{' '.join(cmd)}` failed: "
                          + (errors[0] if errors else f"exit {proc.returncode}")
                          + (f"; {spec.note}" if spec.note else ""))


def unpacked(spec: ServerSpec) -> Path:
    """The unpacked distribution of ``spec`` (fetched and unpacked on first use only)."""
    if not Path(spec.java_home, "bin", "java").exists():
        raise Unavailable(f"{spec.label}: needs the JDK at {spec.java_home}, which is missing")
    if (spec.home / "bin" / spec.product).exists():
        return spec.home
    if not spec.zip_path.exists():
        _fetch(spec)
    if shutil.which("unzip") is None:
        raise Unavailable(f"{spec.label}: unzip is not on PATH (needed to unpack {spec.zip_path})")
    CACHE.mkdir(parents=True, exist_ok=True)
    # Unpack beside the target, then rename: a run killed mid-unpack leaves no half tree.
    part = CACHE / f".{spec.home.name}.{os.getpid()}.part"
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    subprocess.run(["unzip", "-q", str(spec.zip_path), "-d", str(part)], check=True)
    (inner,) = part.iterdir()
    try:
        inner.rename(spec.home)
    except OSError:
        if not (spec.home / "bin").exists():  # not another run that won the race
            raise
    shutil.rmtree(part, ignore_errors=True)
    return spec.home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RealServer:
    """One single-node server; ``start()`` returns once the cluster is at least yellow."""

    def __init__(self, spec: ServerSpec, workdir: Path, *, port: int | None = None,
                 settings: dict[str, str] | None = None, heap: str = "512m:1g") -> None:
        self.spec = spec
        self.home = unpacked(spec)
        self.workdir = workdir
        self.port = port or free_port()
        self.transport_port = free_port()
        self.settings = settings or {}
        self.heap = heap
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(10, 60))
        self.info: dict[str, Any] = {}
        self._conf = workdir / "config"
        if not self._conf.exists():
            self._make_config()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def opensearch(self) -> bool:
        return self.spec.product == "opensearch"

    def _make_config(self) -> None:
        """The distribution's config, copied, with every path pointing into ``workdir``."""
        shutil.copytree(self.home / "config", self._conf)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        jvm = self._conf / "jvm.options"
        logs = self.workdir / "logs"
        lines = []
        for line in jvm.read_text().splitlines():
            if line.lstrip().startswith(("-Xms", "-Xmx")):
                continue  # the heap comes from *_JAVA_OPTS
            # gc.log, heap dumps and crash files default to ES_HOME (the shared cache).
            line = line.replace("file=logs/gc.log", f"file={logs}/gc.log")
            line = line.replace("file=gc.log", f"file={logs}/gc.log")
            line = line.replace("HeapDumpPath=data", f"HeapDumpPath={logs}")
            line = line.replace("ErrorFile=logs/", f"ErrorFile={logs}/")
            line = line.replace("ErrorFile=hs_err", f"ErrorFile={logs}/hs_err")
            lines.append(line)
        jvm.write_text("\n".join(lines) + "\n")
        settings = {
            "cluster.name": f"tailrace-{self.spec.key}",
            "node.name": f"{self.spec.key}-1",
            "discovery.type": "single-node",
            "network.host": "127.0.0.1",
            "http.port": str(self.port),
            "transport.port": str(self.transport_port),
            "path.data": str(self.workdir / "data"),
            "path.logs": str(logs),
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            "action.destructive_requires_name": "false",
            **({} if self.opensearch else {"xpack.security.enabled": "false"}),
            **self.settings,
        }
        yml = self._conf / ("opensearch.yml" if self.opensearch else "elasticsearch.yml")
        yml.write_text("".join(f"{k}: {orjson.dumps(v).decode()}\n"
                               for k, v in settings.items()))

    def start(self, timeout: float = 180.0) -> RealServer:
        env = dict(os.environ)
        xms, xmx = self.heap.split(":")
        if self.opensearch:
            env.update(OPENSEARCH_JAVA_HOME=self.spec.java_home,
                       OPENSEARCH_PATH_CONF=str(self._conf),
                       OPENSEARCH_JAVA_OPTS=f"-Xms{xms} -Xmx{xmx}")
        else:
            env.update(ES_JAVA_HOME=self.spec.java_home, ES_PATH_CONF=str(self._conf),
                       ES_JAVA_OPTS=f"-Xms{xms} -Xmx{xmx}")
        for k in ("JAVA_HOME", "ES_JAVA_OPTS" if self.opensearch else "OPENSEARCH_JAVA_OPTS"):
            env.pop(k, None)
        self.log = open(self.workdir / "console.log", "ab")  # noqa: SIM115
        cmd = [str(self.home / "bin" / self.spec.product)]
        if os.geteuid() == 0:
            # Both refuse to run as root (CI runs as root): a user namespace makes the
            # server uid 1000 inside while it still owns root's files (the cache, tmp).
            cmd = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--", *cmd]
        self.proc = subprocess.Popen(cmd, env=env,
                                     cwd=self.workdir, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.label} exited with {self.proc.returncode} "
                                   f"while starting: {self.tail()}")
            try:
                r = self.http.request("GET", self.url + "/_cluster/health?wait_for_status="
                                      "yellow&timeout=1s", timeout=3)
                if r.status == 200:
                    self.info = orjson.loads(self.http.request("GET", self.url + "/").data)
                    return
            except (urllib3.exceptions.HTTPError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.spec.label} not healthy within {timeout:.0f}s: {self.tail()}")

    def tail(self, n: int = 3000) -> str:
        try:
            return (self.workdir / "console.log").read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return "(no console log)"

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM the process group, SIGKILL it if it has not gone within ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 30.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                # The launcher may exit before its server child: wait for the group to go.
                _wait_group_gone(proc.pid, wait)
                break
            except (subprocess.TimeoutExpired, TimeoutError):
                continue
        self.log.close()

    def kill(self) -> None:
        """SIGKILL the process group at once: a crash (no flush, no goodbye to clients)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        _wait_group_gone(proc.pid, 30.0)
        self.log.close()

    def restart(self) -> RealServer:
        """Stop, then start again on the same port with the same data."""
        self.stop()
        return self.start()

    # -- REST calls of the tests ----------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        r = self.http.request(method, self.url + path, body=data,
                              headers={"Content-Type": "application/json"})
        if r.status >= 400:
            raise AssertionError(f"{method} {path} -> {r.status}: {r.data[:500]!r}")
        return orjson.loads(r.data) if r.data else None

    def count(self, target: str, timeout: float = 60.0) -> int:
        """Documents in ``target`` after a refresh (0 while it does not exist yet).

        A shard still starting (a new index, or after a restart) answers 503
        ``no_shard_available_action_exception``: asked again until it is there.
        """
        lenient = "ignore_unavailable=true&allow_no_indices=true"
        deadline = time.monotonic() + timeout
        while True:
            self.http.request("POST", f"{self.url}/{target}/_refresh?{lenient}")
            r = self.http.request("GET", f"{self.url}/{target}/_count?{lenient}")
            if r.status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if r.status != 200:
            raise AssertionError(f"GET /{target}/_count -> {r.status}: {r.data[:500]!r}")
        return int(orjson.loads(r.data)["count"])


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"process group {pgid} still there after {timeout:.0f}s")


def prefetch() -> None:
    """Fetch and unpack every server once (``.ci/run``), one line each on how it went."""
    for spec in (*SERVERS.values(), *UNSERVED.values()):
        cached = (spec.home / "bin" / spec.product).exists()
        try:
            unpacked(spec)
        except Unavailable as exc:
            print(f"ci: es_real: {exc}: its tests skip", flush=True)
            continue
        print(f"ci: es_real: {spec.label} {'cached' if cached else 'fetched'} ({spec.home})",
              flush=True)


def main() -> None:
    import tempfile

    if sys.argv[1:] == ["--fetch"]:
        return prefetch()
    key = sys.argv[1] if len(sys.argv) > 1 else "es8"
    settings = dict(arg.split("=", 1) for arg in sys.argv[2:])  # extra node settings k=v
    work = Path(tempfile.mkdtemp(prefix=f"tailrace-{key}-"))
    server = RealServer(SERVERS[key], work, settings=settings).start()
    print(f"{server.spec.label} at {server.url} (work dir {work})", flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()


if __name__ == "__main__":
    main()

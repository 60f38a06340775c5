"""The compose stack's topology, run here as local processes: generated lines reach the sink.

The test reads compose/docker-compose.yml and starts what it would start (Redis with the
compose flags, the generator, the agent, ``deploy.replicas`` processors, the file sink),
each with its compose command and environment, and the one mounted config. Only what
containers isolate is mapped: every mount target becomes a folder of the test (named
volumes are shared folders, as in Docker), and each process gets its own
``service.http`` port through ``TAILRACE_HTTP`` (in Docker each container has its own
network namespace). The image's health check runs against each process, as Docker would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from deploy_model import (
    COMPOSE_CONFIG,
    COMPOSE_DIR,
    COMPOSE_FILE,
    healthcheck_argv,
    load_compose,
    parse_mount,
    replicas,
)
from helpers import Role, count_lines, read_json_lines, wait_for
from redis_server import RedisServer, free_port

#: The services of the issue's topology test, in start order.
SERVICES = ("agent", "processor", "sink-file", "generator")
MIN_LINES = 600
REQUEST_RE = re.compile(r"/demo/\d+/\d+")


class ComposeProcess(Role):
    """One replica of a compose service, as a local process running its command."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.role = name
        self.args = [sys.executable, "-m", "tailrace", *argv]
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None


def host_paths(services: dict[str, Any], root: Path) -> dict[str, Path]:
    """Mount target in the containers -> the folder or file standing in for it here."""
    mapping: dict[str, Path] = {}
    for service in services.values():
        for m in map(parse_mount, service.get("volumes", [])):
            if m.is_bind and (COMPOSE_DIR / m.source).resolve() == COMPOSE_CONFIG.resolve():
                mapping[m.target] = root / "etc" / COMPOSE_CONFIG.name
            elif not m.is_bind:
                mapping[m.target] = root / "volumes" / m.source
            else:
                mapping[m.target] = root / "host" / m.source.lstrip("./")
    return mapping


def remap(text: str, mapping: dict[str, Path]) -> str:
    """Replace container paths (longest first) by their stand-ins."""
    for target in sorted(mapping, key=len, reverse=True):
        text = re.sub(re.escape(target) + r"(?=/|\b|$)", str(mapping[target]), text)
    return text


def generated_requests(directory: Path) -> Counter[str]:
    """The unique request path of every line the generator wrote (rotated files too)."""
    found: Counter[str] = Counter()
    for path in directory.glob("*.log*"):
        for line in path.read_text(errors="replace").splitlines():
            found.update(REQUEST_RE.findall(line)[:1])
    return found


def delivered(directory: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.log")):
        records += read_json_lines(path)
    return records


def request_of(record: dict[str, Any]) -> str:
    for value in record.values():
        if isinstance(value, str):
            m = REQUEST_RE.search(value)
            if m:
                return m.group(0)
    raise AssertionError(f"no generated request path in {record}")


def run_healthcheck(test: str | list[str], addr: str) -> subprocess.CompletedProcess[str]:
    argv = healthcheck_argv(test)
    assert argv[0] == "python", test
    env = dict(os.environ, TAILRACE_HEALTH_ADDR=addr)
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, text=True,
                          timeout=30)


def test_compose_topology_as_local_processes_delivers_every_generated_line(
        tmp_path: Path) -> None:
    compose = load_compose(COMPOSE_FILE)
    services = {name: compose["services"][name] for name in SERVICES}
    mapping = host_paths(services, tmp_path)
    for target, path in mapping.items():
        if target != "/etc/tailrace/tailrace.yaml":
            path.mkdir(parents=True, exist_ok=True)
    config_text = remap(COMPOSE_CONFIG.read_text(), mapping)
    config_file = mapping["/etc/tailrace/tailrace.yaml"]
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(config_text)

    redis_args = compose["services"]["redis"]["command"]
    assert redis_args[0] == "redis-server"
    redis = RedisServer(tmp_path / "redis", extra=list(redis_args[1:])).start()
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[tuple[ComposeProcess, str | None]] = []
    try:
        for name in SERVICES:
            service = services[name]
            for n in range(replicas(service)):
                http = f"127.0.0.1:{free_port()}"
                env = {**os.environ, **{k: str(v) for k, v in
                                        (service.get("environment") or {}).items()},
                       "TAILRACE_BROKER": redis.url, "TAILRACE_HTTP": http,
                       "PYTHONUNBUFFERED": "1"}
                argv = [remap(arg, mapping) for arg in service["command"]]
                proc = ComposeProcess(f"{name}-{n + 1}", argv, env, logs).start()
                checks = service.get("healthcheck", {})
                processes.append((proc, None if checks.get("disable") else http))

        generated = mapping["/var/log/generated"]
        wait_for(lambda: sum(generated_requests(generated).values()) >= MIN_LINES, timeout=120,
                 interval=0.2, message=f"{MIN_LINES} generated lines")
        generator = next(p for p, _ in processes if p.role.startswith("generator"))
        os.killpg(generator.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        generator.proc.wait(timeout=30)  # type: ignore[union-attr]
        expected = generated_requests(generated)
        assert all(n == 1 for n in expected.values()), "the generator repeated a line"

        health = compose["x-tailrace"]["healthcheck"]["test"]
        for proc, addr in processes:
            if addr is None:
                continue
            wait_for(lambda a=addr: run_healthcheck(health, a).returncode == 0, timeout=120,
                     interval=0.5, message=f"{proc.role} healthy (GET /health on {addr})")

        out = mapping["/srv/tailrace/out"]
        # count_lines while the sink writes (a line can be seen half written); every line is
        # parsed after the stop, below
        wait_for(lambda: sum(map(count_lines, out.glob("*.log"))) >= len(expected),
                 timeout=180, interval=0.5,
                 message=f"{len(expected)} records in {out}")
    finally:
        codes = {p.role: p.stop(timeout=60) for p, _ in reversed(processes) if p.proc}
        redis.stop()
    for proc, _ in processes:
        if not proc.role.startswith("generator"):
            assert codes[proc.role] == 0, f"{proc.role} exited {codes[proc.role]}:\n" \
                                          f"{proc.output()[-3000:]}"

    records = delivered(out)
    ids = Counter(str(r["_id"]) for r in records)
    assert max(ids.values()) == 1, "a record was delivered twice"
    assert Counter(request_of(r) for r in records) == expected
    sample = records[0]
    assert sample["cluster"] == "compose"  # the modify filter of the mounted config ran
    assert sample["kubernetes"]["namespace"] == "demo"  # metadata from the file names

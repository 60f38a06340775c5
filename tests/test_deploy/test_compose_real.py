"""The compose stack for real, with podman: build, run, kill -9, restart, stop.

The users' compose file (``compose/docker-compose.yml``) with the local-images override
(``compose/docker-compose.local.yml``): Redis with its append-only file, the agent, two
processors and the file sink. The test writes CRI container logs into the agent's log volume
and reads the sink's output volume from the host: every line exactly once, also after
``kill -s KILL`` of the Redis container and of a processor container and ``up -d``; then
``down`` stops every container with exit status 0 within its grace period.

Needs podman, podman-compose and runc (root); skips with the reason otherwise. See
compose/README.md ("No registry: podman and local images") for the same steps by hand.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deploy_model import COMPOSE_FILE, LOCAL_OVERRIDE, load_compose
from helpers import wait_for
from podman_stack import (
    IMAGE,
    PROJECT_PREFIX,
    Stack,
    Unavailable,
    build_image,
    check_can_run,
    check_podman,
    ensure_base_image,
    podman_env,
    remove_orphaned_stacks,
    run,
)
from redis_server import free_port

#: The services the test runs (the users' `up -d` brings these and their dependencies).
SERVICES = ("redis", "agent", "processor", "sink-file")
TAILRACE_SERVICES = ("agent", "processor", "sink-file")
LINES_PER_STEP = 2000
LOG_FILES = 2
TOKEN = re.compile(rb"trc-[a-z0-9]+-\d{6}")
DELIVERY_TIMEOUT_S = 120.0
#: Docker's default when a service sets no stop_grace_period.
DEFAULT_GRACE_S = 10.0


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The podman environment, or a skip saying what is missing and why."""
    env = podman_env(tmp_path_factory.mktemp("podman"))
    try:
        check_podman(env)
        how = ensure_base_image(env)
        check_can_run(env)
    except Unavailable as exc:
        pytest.skip(f"containers tier: {exc}")
    print(f"base image {how}")
    yield env


@pytest.fixture
def stack(podman: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    env = dict(podman, TAILRACE_IMAGE=IMAGE, TAILRACE_REDIS_PORT=str(free_port()))
    s = Stack(project=f"{PROJECT_PREFIX}{os.getpid()}", env=env, log=tmp_path / "compose.log")
    print(f"compose log: {s.log}")
    orphans = remove_orphaned_stacks(env, s.log)
    if orphans:
        print(f"removed the stacks of test runs that are gone: {orphans}")
    s.remove()
    yield s
    s.remove()


class CriLogs:
    """Kubernetes-style container logs (CRI format) of nginx lines, each with a token."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.written: set[bytes] = set()

    def write(self, step: str, count: int) -> None:
        now = datetime.now(UTC)
        cri_time = now.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
        nginx_time = now.strftime("%d/%b/%Y:%H:%M:%S +0000")
        per_file: dict[int, list[bytes]] = {f: [] for f in range(LOG_FILES)}
        for n in range(count):
            token = f"trc-{step}-{len(self.written):06d}".encode()
            self.written.add(token)
            line = (f'10.0.{n % 250}.7 - - [{nginx_time}] "GET /items/{token.decode()} '
                    f'HTTP/1.1" 200 {512 + n} "-" "compose-test/1.0"')
            per_file[n % LOG_FILES].append(f"{cri_time} stdout F {line}\n".encode())
        for f, lines in per_file.items():
            with (self.directory / f"web-{f}.log").open("ab") as out:
                out.write(b"".join(lines))


def delivered(out_dir: Path, complete: bool = False) -> tuple[Counter[bytes], Counter[str]]:
    """Tokens and record ids in the file sink's output, with how often each occurs.

    A file's last line without its newline is a write in progress (the sink's ``write`` can be
    seen half done by a reader): left out, unless ``complete``, which asserts there is none."""
    tokens: Counter[bytes] = Counter()
    ids: Counter[str] = Counter()
    for path in sorted(out_dir.rglob("*.log")):
        *lines, tail = path.read_bytes().split(b"\n")
        assert not (complete and tail), f"{path.name} ends with a partial line: {tail[-200:]!r}"
        for line in lines:
            found = TOKEN.findall(line)
            assert len(found) == 1, f"{path.name}: a record with {len(found)} tokens: {line!r}"
            tokens[found[0]] += 1
            ids[json.loads(line)["_id"]] += 1
    return tokens, ids


def assert_exactly_once(out_dir: Path, logs: CriLogs, stack: Stack, when: str,
                        timeout: float = DELIVERY_TIMEOUT_S) -> float:
    """Wait until every written line is in the output; then each exactly once. Seconds taken."""
    started = time.monotonic()
    while True:
        tokens, ids = delivered(out_dir)
        if set(tokens) >= logs.written or time.monotonic() - started > timeout:
            break
        time.sleep(0.5)
    # A write the last read raced ends at a line boundary: then every line is counted.
    wait_for(lambda: all(p.read_bytes().endswith(b"\n") or not p.stat().st_size
                         for p in out_dir.rglob("*.log")),
             timeout=30, message="the file sink's last write complete")
    tokens, ids = delivered(out_dir, complete=True)
    missing = logs.written - set(tokens)
    doubled = {t: c for t, c in tokens.items() if c > 1}
    invented = set(tokens) - logs.written
    if missing or doubled or invented:
        names = [stack.container(s) for s in ("agent", "processor", "sink-file")]
        pytest.fail(f"{when}: {len(missing)} of {len(logs.written)} lines missing, "
                    f"{len(doubled)} doubled, {len(invented)} never written "
                    f"(e.g. {sorted(missing)[:3]} {list(doubled.items())[:3]})\n"
                    + "\n".join(f"--- {n}\n{stack.logs(n)}" for n in names))
    assert all(c == 1 for c in ids.values()), f"{when}: an _id written twice"
    return time.monotonic() - started


def grace_seconds(service: dict[str, object]) -> float:
    grace = service.get("stop_grace_period")
    return float(str(grace).rstrip("s")) if grace else DEFAULT_GRACE_S


def running(stack: Stack) -> dict[str, str]:
    return {n: d["State"]["Status"] for n, d in stack.containers().items()}


def wait_running(stack: Stack, names: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = running(stack)
        if all(states.get(n) == "running" for n in names):
            return
        time.sleep(0.5)
    pytest.fail(f"not all running after {timeout:.0f} s: {running(stack)}\n"
                + "\n".join(f"--- {n}\n{stack.logs(n)}" for n in names))


def wait_healthy(stack: Stack, name: str, timeout: float = 30) -> None:
    """The compose health check (GET /health), run by podman inside the container.

    Without systemd podman schedules no health checks; `podman healthcheck run` runs one.
    """
    deadline = time.monotonic() + timeout
    while True:
        check = run(["podman", "healthcheck", "run", name], stack.env, check=False)
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{name} not healthy after {timeout:.0f} s: {check.stdout.strip()} "
                        f"{check.stderr.strip()}\n{stack.logs(name)}")
        time.sleep(1)


@pytest.mark.containers
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_compose_stack_delivers_every_line_once_through_kill_9_and_stops_cleanly(
        stack: Stack, tmp_path: Path) -> None:
    model = load_compose(COMPOSE_FILE, LOCAL_OVERRIDE, env=stack.env)
    build_s = build_image(stack.env, tmp_path / "build.log")
    print(f"image built in {build_s:.0f} s")

    stack.compose("up", "-d", *SERVICES)
    names = [stack.container("redis"), stack.container("agent"), stack.container("sink-file"),
             *(stack.container("processor", i) for i in (1, 2))]
    wait_running(stack, names)
    assert set(stack.containers()) == set(names), "up -d started other services too"
    aof = stack.podman("exec", stack.container("redis"), "redis-cli", "CONFIG", "GET",
                       "appendonly").split()
    assert aof == ["appendonly", "yes"]

    logs = CriLogs(stack.volume_dir("generated-logs"))
    out_dir = stack.volume_dir("sink-out")
    logs.write("a", LINES_PER_STEP)
    took = assert_exactly_once(out_dir, logs, stack, "first lines")
    print(f"{len(logs.written)} lines through the stack in {took:.1f} s")
    for name in names:
        wait_healthy(stack, name)

    # kill -9 while lines are in flight, write while Redis is gone, then `up -d`.
    before = {n: stack.containers()[n]["State"]["StartedAt"] for n in names}
    logs.write("b", LINES_PER_STEP)
    killed = [stack.container("redis"), stack.container("processor", 1)]
    for name in killed:
        stack.podman("kill", "-s", "KILL", name)
    logs.write("c", LINES_PER_STEP)
    states = {n: d["State"] for n, d in stack.containers().items() if n in killed}
    # `restart: unless-stopped` may have restarted them already (podman does, on exit).
    print("after kill -9:", {n: (st["Status"], st["ExitCode"]) for n, st in states.items()})
    stack.compose("up", "-d", *SERVICES)
    wait_running(stack, names)
    after = {n: d["State"]["StartedAt"] for n, d in stack.containers().items()}
    assert all(after[n] != before[n] for n in killed), "the killed containers did not restart"
    assert all(after[n] == before[n] for n in names if n not in killed), \
        "up -d restarted containers that were running"
    assert "DB loaded from append only file" in stack.logs(stack.container("redis"), 200), \
        "Redis did not reload its append-only file after kill -9"
    logs.write("d", LINES_PER_STEP)
    took = assert_exactly_once(out_dir, logs, stack, "after kill -9 of Redis and a processor")
    print(f"{len(logs.written)} lines exactly once, {took:.1f} s after the restart")

    # down: SIGTERM (through tini) to each container in turn, one grace period for all.
    grace = {stack.container(s, i): grace_seconds(model["services"][s])
             for s in SERVICES for i in (1, 2) if stack.container(s, i) in names}
    since = datetime.now(UTC).isoformat()
    started = time.monotonic()
    stack.compose("down", "-t", str(int(max(grace.values()))), timeout=300)
    down_s = time.monotonic() - started
    died = stack.died_since(since)
    assert not stack.containers(), "down left containers behind"
    # podman writes ContainerExitCode only when it is not 0; down stops them one at a time.
    exits = {e["Name"]: e.get("ContainerExitCode", 0) for e in died}
    assert set(exits) == set(names), f"died: {sorted(exits)}, expected {sorted(names)}"
    bad = {n: c for n, c in exits.items() if c != 0}
    assert not bad, f"down: exit status not 0 (137 = SIGKILL after the grace period): {bad}"
    stamps = sorted((datetime.fromisoformat(e["Time"].replace("Z", "+00:00")), e["Name"])
                    for e in died)
    previous = datetime.fromisoformat(since)
    for stamp, name in stamps:
        took_s = (stamp - previous).total_seconds()
        assert took_s < grace[name], f"{name} took {took_s:.1f} s to stop (grace {grace[name]})"
        previous = stamp
    print(f"down in {down_s:.1f} s, every container exited 0: {sorted(exits)}")
    # What the sink wrote before it stopped is still exactly once.
    assert_exactly_once(out_dir, logs, stack, "after down", timeout=0)


# -- the harness itself, without podman ---------------------------------------------------


def test_without_podman_the_skip_says_what_is_missing_and_how_to_get_it(tmp_path: Path
                                                                        ) -> None:
    env = dict(podman_env(tmp_path), PATH=str(tmp_path))
    with pytest.raises(Unavailable) as exc:
        check_podman(env)
    message = str(exc.value)
    assert message.startswith("podman, podman-compose, runc not installed")
    assert "apt-get install -y podman runc podman-compose debootstrap" in message
    assert "\n" not in message


def test_the_tests_podman_config_is_its_own(tmp_path: Path) -> None:
    env = podman_env(tmp_path)
    conf = Path(env["CONTAINERS_CONF"])
    assert conf.parent == tmp_path
    text = conf.read_text()
    for setting in ('runtime = "runc"', 'cgroup_manager = "cgroupfs"', "default_ulimits = []"):
        assert setting in text

"""The Dockerfile and its build context, read without Docker; its health check, run locally."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_model import (
    COMPOSE_CONFIG,
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    Instruction,
    dockerfile_instructions,
    dockerignore_excludes,
    dockerignore_patterns,
    healthcheck_argv,
    load_compose,
    parse_cli,
    parse_mount,
    runs_tailrace,
)
from redis_server import free_port

from tailrace.cli.registry import build_registry
from tailrace.config import load_config

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def stage(instructions: list[Instruction], index: int) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    wanted = last if index == -1 else index
    return [i for i in instructions if i.stage == wanted]


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", i.args))
    return env


def test_base_image_is_a_build_argument_shared_by_both_stages(
        instructions: list[Instruction]) -> None:
    args = [i for i in instructions if i.keyword == "ARG" and i.stage == -1]
    assert any(a.args.startswith("BASE_IMAGE=") and "slim" in a.args for a in args)
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 2
    assert froms[0].args == "${BASE_IMAGE} AS builder"
    assert froms[1].args == "${BASE_IMAGE}"


def test_wheels_are_built_in_the_builder_and_installed_offline(
        instructions: list[Instruction]) -> None:
    builder, runtime = stage(instructions, 0), stage(instructions, -1)
    assert any("pip wheel" in i.args for i in builder if i.keyword == "RUN")
    installs = [i.args for i in runtime if i.keyword == "RUN" and "pip install" in i.args]
    assert len(installs) == 1 and "--no-index" in installs[0]
    assert "from=builder" in installs[0], "wheels come from the builder stage"
    compilers = re.compile(r"\b(gcc|build-essential|make|g\+\+)\b")
    assert not any(compilers.search(i.args) for i in runtime if i.keyword == "RUN")


def test_builder_copies_every_package_and_the_readme(instructions: list[Instruction]) -> None:
    copied = set()
    for i in stage(instructions, 0):
        if i.keyword == "COPY":
            *sources, _dest = i.args.split()
            copied |= {s.rstrip("/") for s in sources if not s.startswith("--")}
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir()
                if (p / "__init__.py").exists() and any(re.fullmatch(
                    pat.replace("*", ".*"), p.name) for pat in patterns)}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied


def test_dockerignore_keeps_the_sources_and_drops_the_rest(instructions: list[Instruction]
                                                           ) -> None:
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip(f"not a git checkout: {listing.stderr.strip()}")
    files = listing.stdout.split()
    copied = [s.rstrip("/") for i in stage(instructions, 0) if i.keyword == "COPY"
              for s in i.args.split()[:-1]]
    for path in files:
        needed = any(path == c or path.startswith(c + "/") for c in copied)
        assert dockerignore_excludes(path, patterns) != needed, path
    for junk in (".git/HEAD", ".venv/bin/python", "tailrace/__pycache__/config.cpython-311.pyc",
                 "tests/conftest.py", ".tailrace/redis/dump.rdb"):
        assert dockerignore_excludes(junk, patterns), junk


def test_runs_as_a_fixed_non_root_user(instructions: list[Instruction]) -> None:
    runtime = stage(instructions, -1)
    user = only(runtime, "USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    script = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert f"--uid {uid}" in script and f"--gid {gid or uid}" in script


def test_tini_runs_tailrace_as_pid_1_and_stops_it_with_sigterm(
        instructions: list[Instruction]) -> None:
    runtime = stage(instructions, -1)
    entry = only(runtime, "ENTRYPOINT").exec_form()
    assert entry is not None, "ENTRYPOINT must be exec form (else a shell is PID 1)"
    assert Path(entry[0]).name == "tini" and entry[1:] == ["--", "tailrace"]
    assert "-g" not in entry, "signalling the whole group would hit supervised children twice"
    install = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert re.search(r"apt-get install .*\btini\b", install)
    assert only(runtime, "STOPSIGNAL").args == "SIGTERM"
    cmd = only(runtime, "CMD").exec_form()
    assert cmd == ["--help"]


def test_labels_name_title_version_and_licence(instructions: list[Instruction]) -> None:
    runtime = stage(instructions, -1)
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[\w.]+)="([^"]*)"',
                             only(runtime, "LABEL").args))
    assert labels["org.opencontainers.image.title"] == PYPROJECT["project"]["name"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]["text"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    version = [i.args for i in runtime if i.keyword == "ARG" and i.args.startswith("VERSION=")]
    assert version == [f"VERSION={PYPROJECT['project']['version']}"]


def test_config_path_and_health_address_match_the_compose_stack(
        instructions: list[Instruction]) -> None:
    runtime = stage(instructions, -1)
    env = env_of(runtime)
    compose = load_compose(COMPOSE_FILE)
    agent = compose["services"]["agent"]
    assert env["TAILRACE_CONFIG"] == parse_cli(agent["command"]).params["config_path"]
    config = load_config(COMPOSE_CONFIG, build_registry(), env={})
    port = config.service.http.rpartition(":")[2]
    assert env["TAILRACE_HEALTH_ADDR"] == f"127.0.0.1:{port}"
    assert only(runtime, "EXPOSE").args == port
    health = only(runtime, "HEALTHCHECK")
    assert health.exec_form() == healthcheck_argv(compose["x-tailrace"]["healthcheck"]["test"]), \
        "the compose health check and the image's must be the same command"
    assert f"'127.0.0.1:{port}'" in " ".join(health.exec_form() or [])
    flags = health.flags()
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)


def test_writable_volume_paths_are_created_for_the_tailrace_user(
        instructions: list[Instruction]) -> None:
    runtime = stage(instructions, -1)
    script = " ".join(i.args for i in runtime if i.keyword == "RUN")
    owned = set(re.findall(r"install -d -o tailrace -g tailrace ((?:/\S+ ?)+)", script)[0].split())
    compose = load_compose(COMPOSE_FILE)
    for name, service in compose["services"].items():
        if not runs_tailrace(service):
            continue
        for m in map(parse_mount, service.get("volumes", [])):
            if not m.is_bind and not m.read_only:
                assert m.target in owned, f"{name}: a new volume at {m.target} is root-owned"


# -- the health check command, run here --------------------------------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b"ok")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        code, body = self.answer if self.path == "/health" else (404, b"not found")
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def run_healthcheck(instructions: list[Instruction], addr: str) -> subprocess.CompletedProcess[str]:
    cmd = only(stage(instructions, -1), "HEALTHCHECK").exec_form()
    assert cmd is not None and cmd[0] == "python"
    env = dict(os.environ, TAILRACE_HEALTH_ADDR=addr)
    return subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, text=True,
                          timeout=30)


def test_healthcheck_passes_on_200(instructions: list[Instruction],
                                   health_server: tuple[str, type[_Health]]) -> None:
    addr, handler = health_server
    handler.answer = (200, b"ok\n")
    result = run_healthcheck(instructions, addr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "200 ok"


def test_healthcheck_fails_on_503_and_prints_the_reason(
        instructions: list[Instruction], health_server: tuple[str, type[_Health]]) -> None:
    addr, handler = health_server
    handler.answer = (503, b"agent a1 is broker_down: connection refused\n")
    result = run_healthcheck(instructions, addr)
    assert result.returncode == 1
    assert result.stdout.strip() == "503 agent a1 is broker_down: connection refused"


def test_healthcheck_fails_when_nothing_listens(instructions: list[Instruction]) -> None:
    result = run_healthcheck(instructions, f"127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert "ConnectionRefusedError" in result.stderr

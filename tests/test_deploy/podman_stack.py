"""Podman and podman-compose for the real compose test: setup that leaves the machine alone.

- The test's own ``containers.conf`` (``CONTAINERS_CONF``): runc with cgroupfs (crun, and
  systemd as cgroup manager, need what these machines lack), no default ulimits (raising
  RLIMIT_NPROC is refused), events in a file (there is no journald).
- No image registry: a base image built from Debian packages with debootstrap, kept in
  podman's storage under a label naming its packages, so later runs reuse it.
- The project image built on it from the repository's Dockerfile, the host's CA bundle
  mounted for pip's TLS (a proxy with its own CA sits between containers and PyPI).
- The compose stack: the users' compose file plus ``compose/docker-compose.local.yml``
  (local images), one project name per run, removed with its volumes and network after.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy_model import COMPOSE_FILE, LOCAL_OVERRIDE, ROOT

BASE_IMAGE = "localhost/tailrace-base:bookworm"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "tini", "redis-server")
#: The base image carries its package list: a changed list builds a new one.
BASE_LABEL = "org.tailrace.base.packages"
IMAGE = "localhost/tailrace:ci"
#: The Dockerfile labels its runtime stage with this (and tailrace's name).
IMAGE_TITLE_LABEL = "org.opencontainers.image.title=tailrace"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = ("podman", "podman-compose", "runc")
INSTALL_HINT = ("as root: apt-get install -y podman runc podman-compose debootstrap "
                "(.ci/run does it)")

CONTAINERS_CONF = """\
# Written by tests/test_deploy/podman_stack.py; the machine's own config is not touched.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class Unavailable(Exception):
    """Podman cannot work on this machine; the message says what is missing and why."""


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def podman_env(workdir: Path) -> dict[str, str]:
    """The environment every podman call of the test runs with (its own containers.conf)."""
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return dict(os.environ, CONTAINERS_CONF=str(conf))


def run(argv: list[str], env: dict[str, str], timeout: float = 120, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=input is None,
                                timeout=timeout, input=input)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"`{' '.join(argv)}` did not finish in {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` exited {result.returncode}:\n"
                             f"{_tail(str(result.stdout))}\n{_tail(str(result.stderr))}")
    return result


def check_podman(env: dict[str, str]) -> None:
    """Raise :class:`Unavailable` unless podman can run a container here."""
    missing = [t for t in TOOLS if shutil.which(t, path=env.get("PATH")) is None]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not installed; {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise Unavailable("not root: the test reads the stack's volumes from the host and "
                          "rootless podman is not set up on these machines")
    info = run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env, check=False)
    if info.returncode != 0:
        raise Unavailable(f"`podman info` fails: {_tail(info.stderr, 1)}")


@contextmanager
def image_lock() -> Iterator[None]:
    """One image build (and prune) at a time on the machine: a prune by one run must not
    remove the layers another run is building on."""
    with open(Path(tempfile.gettempdir()) / "tailrace-podman-images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_base_image(env: dict[str, str]) -> str:
    """The Debian base image, built with debootstrap unless podman already has it.

    Returns how it was obtained ("reused" or "built in N s"), for the test's output.
    """
    with image_lock():
        return _ensure_base_image(env)


def _ensure_base_image(env: dict[str, str]) -> str:
    packages = ",".join(BASE_PACKAGES)
    have = run(["podman", "image", "inspect", "--format",
                f'{{{{index .Labels "{BASE_LABEL}"}}}}', BASE_IMAGE], env, check=False)
    if have.returncode == 0 and have.stdout.strip() == packages:
        return "reused"
    if shutil.which("debootstrap", path=env.get("PATH")) is None:
        raise Unavailable(f"no {BASE_IMAGE} and no debootstrap to build it (no registry is "
                          f"reachable for a python image); {INSTALL_HINT}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tailrace-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        boot = run(["debootstrap", "--variant=minbase", f"--include={packages}", BASE_SUITE,
                    str(rootfs)], env, timeout=900, check=False)
        if boot.returncode != 0:
            raise Unavailable(f"debootstrap of {BASE_SUITE} failed (is a Debian mirror "
                              f"reachable?): {_tail(boot.stdout + boot.stderr, 3)}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "--change", f"LABEL {BASE_LABEL}={packages}", "-",
             BASE_IMAGE], stdin=tar.stdout, env=env, capture_output=True, text=True,
            timeout=300)
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise AssertionError(f"podman import of the base image failed: "
                                 f"{_tail(imported.stderr)}")
    return f"built in {time.monotonic() - started:.0f} s"


def check_can_run(env: dict[str, str]) -> None:
    probe = run(["podman", "run", "--rm", BASE_IMAGE, "true"], env, check=False)
    if probe.returncode != 0:
        raise Unavailable(f"podman cannot start a container here: {_tail(probe.stderr, 2)}")


def build_image(env: dict[str, str], log: Path) -> float:
    """Build the project image on the base (layers cached by podman); returns seconds."""
    argv = ["podman", "build", "--format", "docker", "-t", IMAGE,
            "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-f", str(ROOT / "Dockerfile")]
    if CA_BUNDLE.exists():
        argv += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    with image_lock():
        started = time.monotonic()
        result = run([*argv, str(ROOT)], env, timeout=900, check=False)
        log.write_text(result.stdout + result.stderr)
        assert result.returncode == 0, \
            f"podman build failed (log {log}):\n{_tail(result.stderr)}"
        # Earlier builds' images (untagged, ~160 MB each) go; the new image's layers stay as
        # the next build's cache, and so do the builder stages (no label, a few MB each).
        # Images that containers still run are kept by podman.
        run(["podman", "image", "prune", "-f", "--filter", f"label={IMAGE_TITLE_LABEL}"],
            env, check=False)
        return time.monotonic() - started


#: Test projects are named after the pid of the pytest that runs them.
PROJECT_PREFIX = "trtest"


def remove_orphaned_stacks(env: dict[str, str], log: Path) -> list[str]:
    """Stacks of test runs that died without cleaning up (their pytest is gone): their
    containers restart forever (`restart: unless-stopped`) and would take the CPU."""
    out = run(["podman", "ps", "-a", "--format", '{{index .Labels "io.podman.compose.project"}}'],
              env, check=False).stdout.split()
    orphans = sorted({p for p in out if p.startswith(PROJECT_PREFIX)
                      and p[len(PROJECT_PREFIX):].isdigit()
                      and not Path(f"/proc/{p[len(PROJECT_PREFIX):]}").exists()})
    for project in orphans:
        Stack(project=project, env=env, log=log).remove()
    return orphans


@dataclass
class Stack:
    """One compose project: the users' file plus the local-images override."""

    project: str
    env: dict[str, str]
    log: Path
    files: tuple[Path, ...] = (COMPOSE_FILE, LOCAL_OVERRIDE)
    calls: list[str] = field(default_factory=list)

    def compose(self, *args: str, timeout: float = 180) -> None:
        argv = ["podman-compose", "-p", self.project]
        for f in self.files:
            argv += ["-f", str(f)]
        argv += list(args)
        self.calls.append(" ".join(args))
        with self.log.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            try:
                result = subprocess.run(argv, env=self.env, stdout=out,
                                        stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise AssertionError(f"podman-compose {' '.join(args)} did not finish in "
                                     f"{timeout:.0f} s (log {self.log})") from exc
        assert result.returncode == 0, \
            f"podman-compose {' '.join(args)} exited {result.returncode} (log {self.log})"

    def podman(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        return run(["podman", *args], self.env, timeout=timeout, check=check).stdout

    def container(self, service: str, index: int = 1) -> str:
        return f"{self.project}_{service}_{index}"

    def containers(self) -> dict[str, dict[str, Any]]:
        """Every container of the project, by name: its inspect data."""
        names = self.podman("ps", "-a", "--filter",
                            f"label=io.podman.compose.project={self.project}",
                            "--format", "{{.Names}}").split()
        if not names:
            return {}
        data = json.loads(self.podman("inspect", *names))
        return {d["Name"].lstrip("/"): d for d in data}

    def volume_dir(self, volume: str) -> Path:
        return Path(self.podman("volume", "inspect", "--format", "{{.Mountpoint}}",
                                f"{self.project}_{volume}").strip())

    def died_since(self, since: str) -> list[dict[str, Any]]:
        """``died`` events of the project's containers since ``since`` (RFC 3339)."""
        out = self.podman("events", "--stream=false", "--since", since, "--filter",
                          "event=died", "--filter",
                          f"label=io.podman.compose.project={self.project}", "--format", "json")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def logs(self, name: str, lines: int = 30) -> str:
        """The container's last lines, stdout and stderr (Redis logs to one, tailrace to the
        other)."""
        result = run(["podman", "logs", "--tail", str(lines), name], self.env, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        """Everything of the project, whatever state the test left it in."""
        label = f"label=io.podman.compose.project={self.project}"
        ids = self.podman("ps", "-aq", "--filter", label, check=False).split()
        if ids:
            self.podman("rm", "-f", "-t", "0", *ids, check=False)
        vols = self.podman("volume", "ls", "-q", "--filter", label, check=False).split()
        if vols:
            self.podman("volume", "rm", "-f", *vols, check=False)
        self.podman("network", "rm", "-f", f"{self.project}_default", check=False)

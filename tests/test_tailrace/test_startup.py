"""`tailrace run`'s start-up: the embedded Redis launched from the YAML alone, before the
imports and the config's validation (config.embedded_spec, EmbeddedRedis.spawn, cli/run.py);
the validated config decides after."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis

from tailrace.cli.common import collector_paused, load
from tailrace.cli.registry import build_registry
from tailrace.config import embedded_spec, load_config
from tailrace.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = """\
pipeline:
  inputs: [{name: tail, tag: app, path: ./logs/*.log}]
  outputs: [{name: file, match: '*', path: ./out.log}]
"""


def config_file(tmp_path: Path, service: str, pipeline: str = PIPELINE) -> Path:
    path = tmp_path / "conf" / "pipeline.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((f"service: {service}\n" if service else "") + pipeline)
    return path


@pytest.mark.parametrize("service", [
    "",
    "{data_dir: ./state}",
    "{data_dir: ~/tr-state, embedded: {appendfsync: always}}",
    f"{{data_dir: {os.sep}var{os.sep}tr, partitions: 4, embedded: {{appendfsync: 'no'}}}}",
])
def test_the_embedded_spec_read_from_the_yaml_is_what_the_validated_config_runs(
        tmp_path: Path, service: str) -> None:
    cfg = config_file(tmp_path, service)
    config = load_config(cfg, build_registry())
    assert embedded_spec(str(cfg)) == (config.data_dir, config.service.embedded.appendfsync)


@pytest.mark.parametrize("text", [
    "service: {broker: 'redis://localhost:6379'}\n" + PIPELINE,
    "service: {data_dir: '${TR_STATE}'}\n" + PIPELINE,
    "service: {embedded: {appendfsync: sometimes}}\n" + PIPELINE,
    "service: {embedded: everysec}\n" + PIPELINE,
    "service: [a, b]\n" + PIPELINE,
    "service: {data_dir: [a]}\n" + PIPELINE,
    "service: {data_dir: ./x\n",  # not YAML
])
def test_no_embedded_spec_when_the_config_names_a_broker_or_is_not_plain(
        tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(text)
    assert embedded_spec(str(cfg)) is None
    assert embedded_spec(str(tmp_path / "missing.yaml")) is None


def _starts_within(server: EmbeddedRedis, timeout_s: float) -> bool:
    """Whether ``server.start()`` returned within ``timeout_s`` (it blocks on a held lock)."""
    done = threading.Event()

    def start() -> None:
        server.start()
        done.set()

    threading.Thread(target=start, daemon=True).start()
    return done.wait(timeout_s)


def test_a_spawned_server_answers_once_started_and_frees_the_data_dir_lock(
        tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    assert first.spawn() and first.spawned
    try:
        first.start()
        assert not first.spawned
        client = redis.Redis(unix_socket_path=str(first.socket))
        assert client.ping()
        client.close()
        second = EmbeddedRedis(tmp_path)
        assert not second.spawn()  # served already: start() joins it
        assert _starts_within(second, 10), "the spawner kept the data dir's start lock"
        assert second.owned_pid is None  # joined, not owned
    finally:
        first.stop()
    assert first.owned_pid is None


def test_a_spawned_server_stopped_before_it_was_awaited_leaves_nothing_behind(
        tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    assert first.spawn()
    assert first.proc is not None
    proc = first.proc
    began = time.monotonic()
    first.stop()
    # A SHUTDOWN sent before it listened would look done, and the wait run to its timeout.
    assert time.monotonic() - began < 5
    assert proc.poll() is not None and not first.spawned
    again = EmbeddedRedis(tmp_path)
    try:
        assert _starts_within(again, 10), "the stopped spawner kept the start lock"
        assert again.owned_pid is not None  # a server of its own: nothing else served
    finally:
        again.stop()


def _servers_on(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if "redis-server" in (proc.info["name"] or "") and any(
                    str(data_dir) in arg for arg in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_run_stops_the_redis_it_launched_early_when_the_config_is_invalid(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = config_file(tmp_path, f"{{data_dir: {data}}}", textwrap.dedent("""\
        pipeline:
          inputs: [{name: tail, tag: app, path: ./logs/*.log}]
          filters: [{name: no-such-filter, match: '*'}]
        """))
    env = dict(os.environ)
    env.pop("TAILRACE_BROKER", None)
    res = subprocess.run([sys.executable, "-m", "tailrace", "run", "-c", str(cfg)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "no-such-filter" in res.stderr
    # Launched before the validation (its start lock is there), stopped after it failed.
    assert (data / "redis" / "start.lock").exists()
    assert _servers_on(data) == []


def test_the_collector_is_paused_only_while_a_command_imports_and_loads_its_config(
        tmp_path: Path) -> None:
    seen = []
    with collector_paused():
        seen.append(gc.isenabled())
    assert seen == [False] and gc.isenabled()
    with pytest.raises(SystemExit):  # an invalid config exits 2: the collector is back on
        load(str(config_file(tmp_path, "{partitions: many}")))
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller's own choice is left as it was
    finally:
        gc.enable()


def test_run_forks_its_roles_without_importing_the_processor_helpers_pool(
        tmp_path: Path) -> None:
    # Only a processor with service.processor_helpers needs processors.pool (and the
    # multiprocessing modules it brings, ~8 ms of every start-up).
    cfg = config_file(tmp_path, "{data_dir: ./data}")
    code = ("import sys\nimport tailrace.cli.run, tailrace.cli.roles, tailrace.cli.supervising\n"
            f"from tailrace.cli.common import load\nload({str(cfg)!r})\n"
            "print(sorted(m for m in ('processors.pool', 'multiprocessing') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert res.stdout.strip() == "[]", res.stdout

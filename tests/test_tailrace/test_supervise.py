"""Supervised children: forked at their first start, started from their command line after,
and the stop of one process (signals.ProcessStop). Each case runs in a subprocess of its
own: whether a process may fork depends on its threads, and pytest's has some."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SUPERVISE = """
import os, subprocess, sys, threading
from tailrace.supervise import Child, Forked, Supervisor

out = {out!r}

def main():
    with open(out, "a") as f:
        comm = open("/proc/self/comm").read().strip()
        f.write(f"{{comm}} {{' '.join(sys.orig_argv[1:])}} {{sys.stdin.read()!r}}\\n")
    sys.exit(3)  # a crash: the supervisor restarts it

if {other_thread}:
    threading.Thread(target=threading.Event().wait, daemon=True).start()
child = Child("agent-x", ["--version"], main=main)
sup = Supervisor([child], shutdown_timeout_s=5)
stop = threading.Event()
kinds = []

def tick():
    kinds.append(type(child.proc).__name__ if child.proc is not None else "-")
    if child.restarts and isinstance(child.proc, subprocess.Popen):
        stop.set()  # restarted from its command line: seen enough

sup.start(stop)
import gc
print("frozen", gc.get_freeze_count() > 0, flush=True)
print("first", type(child.proc).__name__, child.proc.wait(10), flush=True)
sup.run(stop, tick=tick)
print("restarted", child.restarts, "Popen" in kinds, flush=True)
"""


def supervise(tmp_path: Path, other_thread: bool) -> tuple[str, str]:
    out = tmp_path / "forked.txt"
    code = SUPERVISE.format(out=str(out), other_thread=other_thread)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout, out.read_text() if out.exists() else ""


def test_a_child_forks_at_its_first_start_and_restarts_from_its_command_line(
        tmp_path: Path) -> None:
    stdout, forked = supervise(tmp_path, other_thread=False)
    assert "first Forked 3" in stdout, stdout
    # What this process had made before the fork stays out of its own collections too (a
    # pass over it would copy the pages the children share).
    assert "frozen True" in stdout, stdout
    assert "restarted 1 True" in stdout, stdout
    # The fork looked like the started command to its main: name, argv, an empty stdin.
    assert forked == "tr-agent-x -m tailrace --version ''\n", forked


def test_a_supervisor_with_another_thread_starts_children_from_their_command_line(
        tmp_path: Path) -> None:
    stdout, forked = supervise(tmp_path, other_thread=True)
    assert "first Popen 0" in stdout, stdout  # `tailrace --version` exits 0
    assert forked == ""


DRAIN = """
import sys, time
from tailrace.logs import setup_logging
from tailrace.signals import ProcessStop
setup_logging("info", "text", "test")
stopping = ProcessStop("test", on_force=lambda n: print("forced", n, flush=True),
                       drain_timeout_s={timeout})
stopping.install()
print("ready", flush=True)
stopping.event.wait(30)
print("draining", flush=True)
time.sleep({drain})  # the drain
stopping.exiting()
print("drained", flush=True)
"""


def drain(timeout: float, took: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([sys.executable, "-c", DRAIN.format(timeout=timeout, drain=took)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_drain_past_its_timeout_runs_the_forced_exit_and_exits_1() -> None:
    res = drain(timeout=0.3, took=20)
    assert res.returncode == 1, res
    assert res.stdout == f"draining\nforced {int(signal.SIGTERM)}\n", res.stdout
    assert "runtime_drain_timeout" in res.stderr and "shutdown_timeout_s=0.3" in res.stderr


def test_a_drain_within_its_timeout_exits_0() -> None:
    res = drain(timeout=5, took=0.1)
    assert res.returncode == 0 and res.stdout == "draining\ndrained\n", res


def _run_on_a_redis_that_fails(tmp_path: Path, data_dir: str,
                               env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        service: {{data_dir: '{data_dir}'}}
        pipeline:
          inputs: [{{name: tail, tag: app, path: {tmp_path / '*.log'}}}]
          outputs: [{{name: file, match: '*', path: {tmp_path / 'out.log'}}}]
        """))
    env = dict(os.environ, **env, PATH=f"{fake.parent}:{os.environ['PATH']}")
    env.pop("TAILRACE_BROKER", None)
    res = subprocess.run([sys.executable, "-m", "tailrace", "run", "-c", str(cfg)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "embedded redis-server exited with status 1 at start" in res.stderr
    assert "Traceback" not in res.stderr
    return res


def test_run_whose_embedded_redis_does_not_start_stops_its_children_and_says_why(
        tmp_path: Path) -> None:
    # ${VAR} in data_dir: run cannot launch the server before validating the config, so
    # the children fork first and wait for it (the gate), and are stopped when it fails.
    res = _run_on_a_redis_that_fails(tmp_path, "${TR_TEST_DATA}",
                                     {"TR_TEST_DATA": str(tmp_path / "data")})
    for child in ("agent", "processor-0", "sink"):
        assert f"{child} exited with 0" in res.stderr, res.stderr[-3000:]


def test_run_whose_early_embedded_redis_does_not_start_says_why_and_starts_no_child(
        tmp_path: Path) -> None:
    # A plain data_dir: the server is launched before the imports and the children fork
    # only once it answers; it never does, so none is started.
    res = _run_on_a_redis_that_fails(tmp_path, str(tmp_path / "data"), {})
    assert "exited with" not in res.stderr.replace("redis-server exited with", ""), res.stderr

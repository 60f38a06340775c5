"""Stopping as operators stop it: SIGINT or SIGTERM to the leader, to its whole process
group (Ctrl-C, systemd's KillMode=control-group), or both. Every role exits 0 within
shutdown_timeout_s, having drained and committed: nothing pending in its groups, and once
restarted the pipeline delivers every line exactly once. A second signal exits at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest
import redis
import yaml
from click.testing import CliRunner
from helpers import ROOT, Role, read_json_lines, wait_for
from redis_server import RedisServer
from stopflow import TARGETS, Flow, exit_of, flowing, pending, send
from test_e2e import assert_exactly_once, pipeline_config

from tailrace.cli import cli
from tailrace.keys import Keys
from tailrace.signals import SUPERVISED_ENV

SHUTDOWN_S = 10.0
PARTITIONS = 2
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}

# The role under test, and the processes that complete the pipeline around it.
ROLES: dict[str, tuple[list[str], list[list[str]]]] = {
    "agent": (["agent"], [["processor"], ["sink"]]),
    "processor": (["processor"], [["agent"], ["sink"]]),
    "processor --workers 2": (["processor", "--workers", "2"], [["agent"], ["sink"]]),
    "sink": (["sink"], [["agent"], ["processor"]]),
    "sink --workers 2": (["sink", "--workers", "2"], [["agent"], ["processor"]]),
    "run": (["run"], []),
}
# Its groups: what must have nothing pending once it stopped.
STAGES = {"agent": [], "processor": ["raw"], "sink": ["out"], "run": ["raw", "out"]}


def stop_config(tmp: Path, prefix: str, **service: object) -> Path:
    return pipeline_config(tmp, prefix, partitions=PARTITIONS,
                           shutdown_timeout_s=SHUTDOWN_S, **service)


def assert_drained(r: redis.Redis, prefix: str, role: str) -> None:
    keys = Keys(prefix)
    for stage in STAGES[role.split()[0]]:
        left = pending(r, keys, PARTITIONS, stage)
        assert not any(left.values()), f"{role} left entries pending on {stage}: {left}"


def stop_while_flowing(flow: Flow, r: redis.Redis, prefix: str, cfg: Path, url: str,
                       role: str, target: str, sig: str) -> str | None:
    """Start ``role``, let lines flow through it, stop it with ``sig`` sent to ``target``;
    what went wrong, or None."""
    args = ROLES[role][0]
    under = flow.start(args[0], cfg, url, *args[1:])
    n = flow.delivered()
    flow.wait_delivered(n + 300, f"flowing through {role}")
    assert under.proc is not None
    send(under.proc, target, SIGNALS[sig])
    code, took = exit_of(under, timeout=SHUTDOWN_S + 5)
    if code != 0:
        return f"exited {code}:\n{under.output()[-2000:]}"
    if took >= SHUTDOWN_S:
        return f"took {took:.1f}s to stop"
    if "Traceback" in under.output():
        return f"logged a traceback:\n{under.output()[-2000:]}"
    try:
        assert_drained(r, prefix, role)
    except AssertionError as exc:
        return str(exc)
    return None


def finish(flow: Flow, cfg: Path, url: str, role: str, *extra: str) -> None:
    """Start ``role`` once more, stop writing, wait for every line; then every line once."""
    args = ROLES[role][0]
    flow.start(args[0], cfg, url, *args[1:], *extra)  # the same role again: it resumes
    written = flow.all_written()
    flow.wait_delivered(written, "after the restart")
    time.sleep(1.0)  # room for a late duplicate to show
    codes = flow.stop_all()
    assert set(codes.values()) == {0}, codes
    assert_exactly_once(read_json_lines(flow.out), written)


def test_ctrl_c_on_run_drains_and_exits_0(tmp_path: Path, redis_url: str, r: redis.Redis,
                                          prefix: str) -> None:
    # The case first reported: SIGINT to the whole group of `tailrace run` exited 1.
    cfg = stop_config(tmp_path, prefix)
    with flowing(cfg, rate=2_000) as flow:
        problem = stop_while_flowing(flow, r, prefix, cfg, redis_url, "run", "group", "SIGINT")
        assert problem is None, problem
        finish(flow, cfg, redis_url, "run")


@pytest.mark.slow
@pytest.mark.parametrize("role", list(ROLES), ids=[k.replace(" --workers ", "-x") for k in ROLES])
def test_every_stop_to_the_leader_the_group_or_both_drains_and_exits_0(
        tmp_path: Path, redis_url: str, r: redis.Redis, prefix: str, role: str) -> None:
    """The role started and stopped six times while lines flow through it, once per signal
    and target; the rest of the pipeline runs throughout, and every line arrives once."""
    cfg = stop_config(tmp_path, prefix)
    problems = {}
    with flowing(cfg, rate=2_000) as flow:
        for o in ROLES[role][1]:
            flow.start(o[0], cfg, redis_url, *o[1:])
        for target in TARGETS:
            for sig in SIGNALS:
                problem = stop_while_flowing(flow, r, prefix, cfg, redis_url, role, target,
                                             sig)
                if problem:
                    problems[f"{target} {sig}"] = problem
        assert not problems, "\n".join(f"--- {role}, {k}: {v}" for k, v in problems.items())
        finish(flow, cfg, redis_url, role)


SLOW_FILTER = '''
import os
import time

def check(record):
    # Once the test creates the marker, hold this batch for {hold}s: a drain in progress.
    if os.path.exists({marker!r}):
        os.unlink({marker!r})
        time.sleep({hold})
    return record
'''


def slow_config(tmp: Path, prefix: str, hold: float) -> tuple[Path, Path]:
    """The stop pipeline, its processor holding one batch for ``hold`` s on demand."""
    cfg = stop_config(tmp, prefix)
    marker = tmp / "hold-a-batch"
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "slow.py").write_text(SLOW_FILTER.format(marker=str(marker), hold=hold))
    doc = yaml.safe_load(cfg.read_text())
    doc["pipeline"]["filters"].append({"name": "python", "call": "slow:check",
                                       "path": str(tmp / "plugins")})
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg, marker


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("role", ["processor", "run"])
def test_a_second_signal_during_the_drain_exits_at_once_and_loses_nothing(
        tmp_path: Path, redis_url: str, prefix: str, role: str) -> None:
    cfg, marker = slow_config(tmp_path, prefix, hold=8.0)
    # `run` on the embedded Redis: exiting at once must not leave the server behind.
    url = "" if role == "run" else redis_url
    with flowing(cfg, rate=2_000) as flow:
        if role == "processor":
            flow.start("agent", cfg, url)
            flow.start("sink", cfg, url)
        under = flow.start(role, cfg, url)
        flow.wait_delivered(400, "flowing")
        marker.touch()
        wait_for(lambda: not marker.exists(), timeout=30, message="a batch held in the filter")
        assert under.proc is not None
        send(under.proc, "group", signal.SIGTERM)
        time.sleep(1.5)  # past the window in which a repeat is the same stop
        assert under.alive, "the first signal did not wait for the batch in hand"
        send(under.proc, "group", signal.SIGINT)
        code, took = exit_of(under, timeout=5)
        assert code == 128 + signal.SIGINT, under.output()[-3000:]
        assert took < 2.0, f"{role} took {took:.1f}s to exit on the second signal"
        if role == "run":
            wait_for(lambda: group_gone(under.proc.pid), timeout=3,  # type: ignore[union-attr]
                     message="every child of `run` gone with it")
            assert not (tmp_path / "data" / "redis" / "redis.sock").exists(), \
                "the embedded Redis outlived an exit at once"
        finish(flow, cfg, url, role)  # what was in hand is redone, not doubled


def working(client: redis.Redis, prefix: str) -> set[str]:
    """Ids of the workers whose published record says they are at work (a reloaded
    process keeps its pid and gets a new id)."""
    names = list(client.scan_iter(match=Keys(prefix).worker_pattern()))
    records = [orjson.loads(v) for v in client.mget(names) if v] if names else []
    return {str(w["id"]) for w in records if w.get("state") in ("active", "idle")}


@pytest.mark.slow
@pytest.mark.parametrize("sig", list(SIGNALS))
def test_run_stopped_by_its_group_after_a_broker_outage_and_two_reloads_exits_0(
        tmp_path: Path, fresh_redis: RedisServer, prefix: str, sig: str) -> None:
    cfg = stop_config(tmp_path, prefix)
    url = fresh_redis.url
    with flowing(cfg, rate=1_500) as flow:
        run = flow.start("run", cfg, url, "--processors", "2")
        assert run.proc is not None
        flow.wait_delivered(1_000, "before the outage")
        fresh_redis.kill()
        time.sleep(2.0)
        fresh_redis.start()
        n = flow.delivered()
        flow.wait_delivered(n + 1_000, "after the outage")
        client = fresh_redis.client()
        before = working(client, prefix)
        os.kill(run.proc.pid, signal.SIGHUP)  # reload 1: the supervisor forwards it
        wait_for(lambda: run.output().count("runtime_reload:") >= 4, timeout=30,
                 message="every child reloading")
        wait_for(lambda: len(working(client, prefix) - before) == 4, timeout=60,
                 message="every child back at work after the reload")
        n = flow.delivered()
        flow.wait_delivered(n + 1_000, "after the first reload")
        before = working(client, prefix)
        result = CliRunner().invoke(cli, ["reload", "-c", str(cfg), "--broker", url])
        assert result.exit_code == 0, result.output  # reload 2: through Redis
        wait_for(lambda: len(working(client, prefix) - before) == 4, timeout=60,
                 message="every child back at work after the second reload")
        n = flow.delivered()
        flow.wait_delivered(n + 1_000, "after the second reload")
        send(run.proc, "group", SIGNALS[sig])
        code, took = exit_of(run, timeout=SHUTDOWN_S + 5)
        assert code == 0, run.output()[-4000:]
        assert took < SHUTDOWN_S
        try:
            assert_drained(client, prefix, "run")
        finally:
            client.close()
        finish(flow, cfg, url, "run", "--processors", "2")


def stop_worker(cfg: Path, url: str, target: str, sig: str, *extra: str) -> str | None:
    """Start the job worker, stop it with ``sig`` sent to ``target``; what went wrong."""
    log = cfg.parent / f"worker-{target}-{sig}{''.join(extra)}.log"  # a log of its own
    worker = Role("worker", cfg, url, *extra, log=log).start()
    try:
        wait_for(lambda: "Listening on" in worker.output(), timeout=30,
                 message="the worker to listen")
        assert worker.proc is not None
        send(worker.proc, target, SIGNALS[sig])
        code, took = exit_of(worker, timeout=SHUTDOWN_S)
    finally:
        worker.kill()
    if code != 0 or "Traceback" in worker.output():
        return f"exited {code} after {took:.1f}s:\n{worker.output()[-2000:]}"
    return None


def test_the_job_worker_stopped_by_ctrl_c_exits_0(tmp_path: Path, redis_url: str,
                                                   prefix: str) -> None:
    problem = stop_worker(stop_config(tmp_path, prefix), redis_url, "group", "SIGINT")
    assert problem is None, problem


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_job_worker_stops_on_the_leader_the_group_or_both(
        tmp_path: Path, redis_url: str, prefix: str, workers: str) -> None:
    cfg = stop_config(tmp_path, prefix)
    problems = {f"{t} {s}": stop_worker(cfg, redis_url, t, s, "--workers", workers)
                for t in TARGETS for s in SIGNALS}
    assert not any(problems.values()), problems


def test_a_stop_that_arrives_while_a_role_starts_waits_for_its_handlers(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    # Sent just after the process started (it is still importing): kept, then obeyed as a
    # clean stop instead of a KeyboardInterrupt traceback.
    cfg = stop_config(tmp_path, prefix)
    code = textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        from tailrace.signals import blocked
        with blocked():
            p = subprocess.Popen([sys.executable, "-m", "tailrace", "processor", "-c",
                                  {str(cfg)!r}, "--broker", {redis_url!r}])
        time.sleep(0.05)
        os.kill(p.pid, signal.SIGINT)
        sys.exit(p.wait(30))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    assert b"KeyboardInterrupt" not in out.stderr


@pytest.mark.slow
def test_run_restarts_its_embedded_redis_when_it_dies_and_loses_nothing(
        tmp_path: Path) -> None:
    import psutil

    cfg = stop_config(tmp_path, "tr", embedded={"appendfsync": "always"})
    with flowing(cfg, rate=1_500) as flow:
        run = flow.start("run", cfg, "")
        flow.wait_delivered(1_000, "before the outage")
        [server] = [p for p in psutil.Process(run.proc.pid).children()  # type: ignore[union-attr]
                    if p.name().startswith("redis-server")]
        server.kill()
        wait_for(lambda: "supervisor_redis_exited" in run.output(), timeout=10,
                 message="the supervisor noticing the embedded Redis died")
        n = flow.delivered()
        flow.wait_delivered(n + 1_000, "after the embedded Redis was restarted")
        written = flow.all_written()
        flow.wait_delivered(written, "every line")
        time.sleep(1.0)
        codes = flow.stop_all()
    assert set(codes.values()) == {0}, codes
    assert_exactly_once(read_json_lines(flow.out), written)


DRAINER = """
import sys, threading, time
from tailrace.signals import StopSignals
stopped = threading.Event()
StopSignals(lambda n: (print("stop", n, flush=True), stopped.set())).install()
print("ready", flush=True)
stopped.wait(30)
time.sleep({drain})  # the drain
print("drained", flush=True)
"""


def drainer(drain: float, **env: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", DRAINER.format(drain=drain)], cwd=ROOT,
                            stdout=subprocess.PIPE, start_new_session=True,
                            env=dict(os.environ, **env))
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return proc


@pytest.mark.parametrize("target", TARGETS)
def test_one_stop_sent_to_the_leader_the_group_or_both_is_one_stop(target: str) -> None:
    proc = drainer(1.0)
    send(proc, target, signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and out == b"stop 15\ndrained\n", out


@pytest.mark.parametrize("supervised", [False, True])
def test_a_second_signal_after_the_window_exits_at_once_unless_supervised(
        supervised: bool) -> None:
    proc = drainer(3.0, **({SUPERVISED_ENV: "1"} if supervised else {}))
    send(proc, "group", signal.SIGINT)
    time.sleep(1.3)  # past the window in which a repeat is the same stop
    sent = time.monotonic()
    send(proc, "group", signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    if supervised:  # the supervisor escalates, not the child: it finishes its drain
        assert proc.returncode == 0 and out == b"stop 2\ndrained\n", out
    else:
        assert proc.returncode == 128 + signal.SIGINT and out == b"stop 2\n", out
        assert time.monotonic() - sent < 1.0


@pytest.mark.slow
def test_ctrl_c_on_the_job_worker_mid_backfill_finishes_the_job_then_exits_0(
        tmp_path: Path, redis_url: str, r: redis.Redis, prefix: str) -> None:
    from tailrace.generate import Generator
    from tailrace.wire import decode_raw

    total = 200_000
    gen = Generator(tmp_path / "old", files=1, fmt="plain", rate=0, total=total)
    gen.run(chunk=10_000)
    gen.close()
    [path] = list((tmp_path / "old").glob("*.log"))
    cfg = stop_config(tmp_path, prefix)
    keys = Keys(prefix)
    worker = Role("worker", cfg, redis_url).start()
    try:
        wait_for(lambda: "Listening on" in worker.output(), timeout=30,
                 message="the worker to listen")
        result = CliRunner().invoke(cli, ["backfill", "-c", str(cfg), "--broker", redis_url,
                                          "--no-wait", str(path)])
        assert result.exit_code == 0, result.output
        wait_for(lambda: sum(r.xlen(keys.raw(p)) for p in range(PARTITIONS)) > 0,
                 timeout=30, interval=0.02, message="the backfill job under way")
        assert worker.proc is not None
        send(worker.proc, "group", signal.SIGINT)
        code, _ = exit_of(worker, timeout=120)
    finally:
        worker.kill()
    assert code == 0, worker.output()[-3000:]
    lines = [line for p in range(PARTITIONS)
             for _id, fields in r.xrange(keys.raw(p)) for line in decode_raw(fields).lines]
    assert len(lines) == total and len(set(lines)) == total, "the job did not finish once"


@pytest.mark.slow
def test_run_stopped_as_systemd_does_it_every_process_at_once_exits_0(tmp_path: Path) -> None:
    # KillMode=control-group: SIGTERM to every process of the unit, the embedded Redis (in
    # a session of its own) included. Redis must outlive the workers' drain.
    import psutil

    cfg = stop_config(tmp_path, "tr")
    with flowing(cfg, rate=2_000) as flow:
        run = flow.start("run", cfg, "")
        assert run.proc is not None
        flow.wait_delivered(1_000, "flowing")
        unit = [run.proc.pid] + [p.pid for p in psutil.Process(run.proc.pid).children(True)]
        assert len(unit) == 5, unit  # supervisor, redis-server, agent, processor, sink
        for pid in unit:
            os.kill(pid, signal.SIGTERM)
        code, took = exit_of(run, timeout=SHUTDOWN_S + 5)
        assert code == 0, run.output()[-3000:]
        assert took < SHUTDOWN_S
        assert "Traceback" not in run.output() and "broker_error" not in run.output(), \
            run.output()[-3000:]
        finish(flow, cfg, "", "run")

"""Operating a pipeline: heartbeats, status, /health, /metrics, reload."""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import redis
import yaml
from click.testing import CliRunner
from helpers import Role, count_lines, read_json_lines, wait_for
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer, free_port
from test_e2e import assert_exactly_once, pipeline_config

from tailrace.cli import cli
from tailrace.generate import Generator
from tailrace.keys import Keys
from tailrace.status import collect

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def workers(r: redis.Redis, prefix: str) -> list[dict[str, object]]:
    keys = list(r.scan_iter(match=Keys(prefix).worker_pattern()))
    return [orjson.loads(v) for v in r.mget(keys) if v] if keys else []


def test_heartbeats_appear_and_expire_after_a_kill(tmp_path: Path, redis_url: str,
                                                   prefix: str, r: redis.Redis) -> None:
    cfg = pipeline_config(tmp_path, prefix)
    proc = Role("processor", cfg, redis_url).start()
    try:
        def full_record() -> list[dict[str, object]]:
            return [w for w in workers(r, prefix) if w["role"] == "processor"
                    and {t["name"] for t in w["threads"]} >= {"consumer", "lease-keeper"}]

        rec = wait_for(full_record, timeout=30, message="the processor's lifecycle record")[0]
        assert rec["state"] in ("idle", "active")
        assert rec["pid"] == proc.proc.pid  # type: ignore[union-attr]
        proc.kill()
        # publish_interval_s is 1 in pipeline_config: the record lives 3 s after the last one.
        wait_for(lambda: not workers(r, prefix), timeout=15, message="the record to expire")
    finally:
        proc.kill()


def test_status_shows_lag_rising_while_the_sink_is_stopped_and_falling_after(
        tmp_path: Path, redis_url: str, prefix: str, r: redis.Redis) -> None:
    total = 20_000
    cfg = pipeline_config(tmp_path, prefix)
    gen = Generator(tmp_path / "logs", files=2, fmt="plain", rate=0, total=total)
    gen.run()
    gen.close()
    keys = Keys(prefix)
    agent = Role("agent", cfg, redis_url).start()
    proc = Role("processor", cfg, redis_url).start()
    roles = [agent, proc]
    try:
        def sink_lag() -> int:
            return int(collect(r, keys, 4, ["sink:all"])["groups"]["sink:all"]["lag"])

        wait_for(lambda: sink_lag() > 0 and
                 collect(r, keys, 4, ["sink:all"])["groups"]["processors"]["lag"] == 0,
                 timeout=60, message="everything processed and waiting for the sink")
        result = CliRunner().invoke(cli, ["status", "-c", str(cfg), "--broker", redis_url,
                                          "--json"])
        assert result.exit_code == 0, result.output
        doc = orjson.loads(result.stdout)
        assert doc["groups"]["sink:all"]["lag"] == sink_lag() > 0
        assert {w["role"] for w in doc["workers"]} >= {"agent", "processor"}
        agents = wait_for(lambda: [a for a in collect(r, keys, 4, ["sink:all"])["agents"]
                                   if a.get("files_total") == 2
                                   and a.get("bytes_behind") == 0], timeout=15,
                          message="the agent's published files, all read")
        assert {Path(f["path"]).parent for f in agents[0]["files"]} == {tmp_path / "logs"}
        table = CliRunner().invoke(cli, ["status", "-c", str(cfg), "--broker", redis_url])
        assert table.exit_code == 0 and "sink:all" in table.stdout
        assert "2 files followed" in table.stdout

        def states() -> dict[str, str]:
            return {w["role"]: w["state"]
                    for w in collect(r, keys, 4, ["sink:all"])["workers"]}

        # Nothing left to read or process: both say idle (their housekeeping threads, always
        # running, do not make them look busy).
        wait_for(lambda: states() == {"agent": "idle", "processor": "idle"}, timeout=15,
                 message=f"agent and processor idle (states: {states()})")
        sink = Role("sink", cfg, redis_url).start()
        roles.append(sink)
        out = tmp_path / "out" / "all.log"
        wait_for(lambda: count_lines(out) >= total, timeout=90, message="the sink to catch up")
        wait_for(lambda: sink_lag() == 0, timeout=30, message="the sink's lag to fall to 0")
        wait_for(lambda: states().get("sink") == "idle", timeout=15,
                 message="the sink idle once caught up")
    finally:
        codes = [role.stop() for role in roles if role.alive]
    assert codes == [0] * len(codes)


def test_health_flips_to_503_while_redis_is_down_and_back_after(
        tmp_path: Path, fresh_redis: RedisServer, prefix: str) -> None:
    port = free_port()
    cfg = pipeline_config(tmp_path, prefix, http=f"127.0.0.1:{port}")
    proc = Role("processor", cfg, fresh_redis.url).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(url + "/health")[0] == 200, timeout=30, message="healthy")
        fresh_redis.kill()
        code, reason = wait_for(lambda: (lambda g: g if g[0] == 503 else None)(
            get(url + "/health")), timeout=30, message="/health to answer 503")
        assert "broker_down" in reason
        fresh_redis.start()
        wait_for(lambda: get(url + "/health")[0] == 200, timeout=60, message="healthy again")
        metrics = get(url + "/metrics")[1]
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        assert "tailrace_worker_state" in families
        states = {s.labels["state"]: s.value for s in families["tailrace_worker_state"].samples}
        assert sum(states.values()) == 1.0
        status = orjson.loads(get(url + "/api/v1/status")[1])
        assert status["workers"][0]["role"] == "processor"
    finally:
        code = proc.stop()
    assert code == 0


def _restarted(log: str) -> bool:
    """Whether each child of a `run` started twice: the agent opened its files again, the
    processor and the sink took their partitions again."""
    def times(role: str, name: str) -> int:  # whichever module logs it
        return len(re.findall(rf"\[{role}\] [\w.]+: {name}:", log))

    return (times("agent", "tail_file_opened") >= 6  # 3 files, twice
            and times("processor", "lease_acquired") >= 2
            and times("sink", "lease_acquired") >= 2)


def test_reload_with_a_new_filter_changes_output_without_loss_or_duplicate(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    total = 30_000
    cfg = pipeline_config(tmp_path, prefix)
    out = tmp_path / "out" / "all.log"
    gen = Generator(tmp_path / "logs", files=3, fmt="plain", rate=3_000, total=total)
    stop = threading.Event()
    t = threading.Thread(target=gen.run, args=(stop,), daemon=True)
    run = Role("run", cfg, redis_url).start()
    t.start()
    try:
        wait_for(lambda: count_lines(out) > 2_000, timeout=60, message="first records")
        doc = yaml.safe_load(cfg.read_text())
        doc["pipeline"]["filters"].append(
            {"name": "modify", "match": "*", "set": {"reloaded": "yes"}})
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        result = CliRunner().invoke(cli, ["reload", "-c", str(cfg), "--broker", redis_url])
        assert result.exit_code == 0, result.output
        wait_for(lambda: any(b'"reloaded":"yes"' in line for line in open(out, "rb")),
                 timeout=60, message="records shaped by the new filter")
        # Every child back on the new config before the file breaks: each reads the file
        # when it notices the reload (within a second), and one that had not yet would
        # refuse the broken file and keep the old config.
        wait_for(lambda: _restarted(run.output()), timeout=60,
                 message="every child re-executed with the new config")
        # A broken config is refused: the pipeline keeps running the last good one.
        cfg.write_text(cfg.read_text().replace("partitions: 4", "partitions: nope"))
        result = CliRunner().invoke(cli, ["reload", "-c", str(cfg), "--broker", redis_url])
        assert result.exit_code == 2 and "service.partitions" in result.stderr
        t.join(timeout=60)
        try:
            wait_for(lambda: count_lines(out) >= total, timeout=120, message="every record")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {count_lines(out)} of {total} lines out; "
                                 f"the run's log ends:\n{run.output()[-6000:]}") from None
    finally:
        stop.set()
        gen.close()
        code = run.stop()
    assert code == 0, run.output()[-3000:]
    records = read_json_lines(out)
    assert_exactly_once(records, total)
    assert records[-1].get("reloaded") == "yes"


def test_a_broken_config_on_sighup_keeps_the_old_pipeline(tmp_path: Path, redis_url: str,
                                                         prefix: str) -> None:
    cfg = pipeline_config(tmp_path, prefix)
    proc = Role("processor", cfg, redis_url).start()
    try:
        wait_for(lambda: "lease_acquired" in proc.output(), timeout=30, message="start")
        pid = proc.proc.pid  # type: ignore[union-attr]
        cfg.write_text(cfg.read_text() + "bogus: 1\n")
        import os
        import signal
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "runtime_reload_rejected" in proc.output(), timeout=30,
                 message="the reload to be rejected")
        assert "bogus" in proc.output() and proc.alive
    finally:
        code = proc.stop()
    assert code == 0


def test_a_config_broken_during_the_reload_drain_does_not_stop_the_role(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    """The reload validated the file; the new image runs that text (carried over the exec),
    not what the file holds when it starts: before, it read the file again and exited 2."""
    import os
    import signal
    cfg = pipeline_config(tmp_path, prefix)
    good = cfg.read_text()
    proc = Role("processor", cfg, redis_url).start()
    try:
        wait_for(lambda: "lease_acquired" in proc.output(), timeout=30, message="start")
        cfg.write_text(good.replace("partitions: 4", "partitions: 4\n  log_level: info"))
        os.kill(proc.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
        wait_for(lambda: "runtime_reload:" in proc.output(), timeout=30,
                 message="the reload to be accepted")
        cfg.write_text(good + "bogus: 1\n")  # broken while the old image drains
        wait_for(lambda: proc.output().count("lease_acquired") >= 2 or not proc.alive,
                 timeout=30, message="the re-executed processor to take its partitions")
        assert proc.alive, proc.output()[-3000:]
        assert "bogus" not in proc.output()
    finally:
        code = proc.stop()
    assert code == 0, proc.output()[-3000:]


def test_a_role_stopped_while_the_broker_never_answered_exits_0(tmp_path: Path,
                                                                prefix: str) -> None:
    cfg = pipeline_config(tmp_path, prefix)
    proc = Role("processor", cfg, f"redis://127.0.0.1:{free_port()}/0").start()
    wait_for(lambda: "runtime_broker_unreachable" in proc.output(), timeout=30,
             message="the processor to wait for the broker")
    assert proc.stop() == 0, proc.output()[-2000:]

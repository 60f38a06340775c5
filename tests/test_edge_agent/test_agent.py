"""The agent loop on a real Redis: restarts, backpressure, outages, published state."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis
from helpers import Role, wait_for, write_config

from tailrace.keys import Keys
from tailrace.wire import decode_raw

CID = "0123456789abcdef" * 4
T = "2024-05-01T12:00:00.500000000Z"


def lines(prefix: str, n: int, start: int = 0) -> bytes:
    return b"".join(b"%s-%06d\n" % (prefix.encode(), i) for i in range(start, start + n))


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_restart_resumes_after_the_last_committed_offset(tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "a.log"
    log.write_bytes(lines("a", 500))
    h = make_agent([tail(logs / "*.log")])
    h.start().wait_lines(500)
    h.stop()
    append(log, lines("a", 300, 500))  # written while the agent is down
    h.start()
    s = h.wait_lines(800)
    append(log, lines("a", 1, 800))
    s = h.wait_lines(801)
    h.stop()
    assert s.lines == lines("a", 801).splitlines()


def test_local_checkpoint_prevents_rereading_when_redis_lost_its_offsets(
        tmp_path, make_agent, tail, r, prefix) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(lines("a", 100))
    h = make_agent([tail(logs / "*.log")], partitions=2)
    h.start().wait_lines(100)
    h.stop()
    keys = Keys(prefix)
    r.delete(keys.offsets(0), keys.offsets(1), keys.meta())  # Redis lost its state
    append(logs / "a.log", lines("a", 10, 100))
    h.start()
    s = h.wait_lines(110)
    h.stop()
    assert s.lines == lines("a", 110).splitlines()


def test_first_start_tails_from_the_end_and_later_files_are_read_from_the_head(
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "old.log").write_bytes(lines("history", 100))
    h = make_agent([tail(logs / "*.log", read_from_head=False)])
    h.start()
    wait_for(lambda: h.agent.inputs[0].table.files and all(
        tf.started for tf in h.agent.inputs[0].table.files.values()), message="file started")
    append(logs / "old.log", lines("live", 2))
    s = h.wait_lines(2)
    h.stop()
    (logs / "new.log").write_bytes(lines("new", 5))  # appeared while the agent was down
    h.start()
    s = h.wait_lines(7)
    h.stop()
    assert sorted(s.lines) == sorted((lines("live", 2) + lines("new", 5)).splitlines())


def test_backpressure_stops_reading_with_bounded_memory_and_resumes_exactly(
        tmp_path, make_agent, tail, r, prefix) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(lines("a", 20_000))
    h = make_agent([tail(logs / "*.log", batch_lines=500, mem_buf_limit="64KiB")],
                   partitions=1, backlog={"max_entries_per_partition": 3}).start()
    wait_for(lambda: h.state() == "throttled", message="throttled state")
    raw = Keys(prefix).raw(0)
    assert r.xlen(raw) == 3
    inp = h.agent.inputs[0]
    assert sum(tf.held_bytes for tf in inp.table.files.values()) <= 64 * 1024
    detail = h.agent.status.detail
    assert "backlog over 3" in detail and "partitions [0]" in detail
    got: list[bytes] = []

    def consume() -> bool:  # a consumer acknowledging (here: deleting) what it read
        for entry_id, fields in r.xrange(raw):
            from tailrace.wire import decode_raw
            got.extend(decode_raw(fields).lines)
            r.xdel(raw, entry_id)
        return len(got) >= 20_000

    wait_for(consume, timeout=60, message="all lines through a 3-batch backlog")
    h.stop()
    assert got == lines("a", 20_000).splitlines()


def test_redis_memory_limit_pauses_reading(tmp_path, make_agent, tail, r, prefix) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(lines("a", 100))
    h = make_agent([tail(logs / "*.log")], backlog={"max_redis_memory": 1}).start()
    wait_for(lambda: h.state() == "throttled", message="throttled on memory")
    assert "memory" in h.agent.status.detail
    assert not h.shipped().lines
    h.stop()


def test_produce_refuses_over_the_memory_limit_even_before_the_agent_looks(
        tmp_path, make_agent, tail, r, prefix, monkeypatch, caplog) -> None:
    """The agent looks at Redis memory once a second; between two looks, PRODUCE itself
    refuses a batch while Redis is over the limit, and the agent pauses at once."""
    import edge_agent.pressure

    monkeypatch.setattr(edge_agent.pressure, "memory_by_node", lambda _client: [])  # never looks
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(lines("a", 100))
    h = make_agent([tail(logs / "*.log")], backlog={"max_redis_memory": 1}).start()
    wait_for(lambda: "pausing reads" in caplog.text, message="PRODUCE refusing for memory")
    assert "Redis refused a batch" in caplog.text
    assert not h.shipped().lines
    h.stop()


def test_broker_outage_holds_batches_and_resumes_exactly_where_it_was(
        tmp_path, make_agent, tail, fresh_redis) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "a.log"
    log.write_bytes(lines("a", 1000))
    h = make_agent([tail(logs / "*.log")], url=fresh_redis.url).start()
    h.wait_lines(1000)
    fresh_redis.kill()
    append(log, lines("a", 5000, 1000))
    wait_for(lambda: h.state() == "broker_down", message="broker_down state")
    fresh_redis.start()
    s = h.wait_lines(6000, timeout=60)
    wait_for(lambda: h.state() in ("idle", "active"), message="recovered state")
    h.stop()
    assert s.lines == lines("a", 6000).splitlines()


def test_deleted_file_is_retired_before_a_new_file_on_its_inode_starts_even_after_a_broker_error(  # noqa: E501
        tmp_path, make_agent, tail) -> None:
    """The retirement of a deleted file (its next generation) failed on a broker error, and
    a new file with its inode and first line appeared meanwhile: the retirement is done
    before the new file starts, so the new file's generation is never bumped again under it
    (which would read it once more after a restart)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(b"# header\n" + lines("first", 20))
    h = make_agent([tail(logs / "*.log", rotate_wait_s=0.1)]).start()
    h.wait_lines(21)
    new = b"# header\n" + lines("second", 40)
    starter = h.agent.starter
    retire = starter.retire
    reused: list[bool] = []

    def retire_fails_once(client, files):  # the deleted file is closed: its inode is free
        if reused:
            return retire(client, files)
        ino = files[0].ident.fid.ino
        log.write_bytes(new)
        reused.append(log.stat().st_ino == ino)
        raise redis.exceptions.ConnectionError("injected: broker lost during retire")

    starter.retire = retire_fails_once
    log.unlink()
    wait_for(lambda: reused, message="deleted file closed")
    if not reused[0]:
        h.stop()
        pytest.skip("the file system did not hand out the same inode again")
    h.wait_read_to_end(log)
    h.stop()
    h.start().wait_read_to_end(log)
    h.stop()
    s = h.shipped()
    assert Counter(s.lines) == Counter((b"# header\n" + lines("first", 20)).splitlines()
                                       + new.splitlines())


def test_cri_batches_carry_runtime_time_stream_path_and_kubernetes_metadata(
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "containers"
    logs.mkdir()
    log = logs / f"web-1_shop_nginx-{CID}.log"
    log.write_bytes(f"{T} stdout F hello\n{T} stderr F oops\n".encode())
    h = make_agent([tail(logs / "*.log", format="cri", tag="kube.<namespace>.<pod>")]).start()
    s = h.wait_lines(2)
    h.stop()
    (_, batch), = s.batches
    assert batch.lines == [b"hello", b"oops"]
    assert batch.streams == ["stdout", "stderr"]
    assert batch.times == [1714564800.5, 1714564800.5]
    assert batch.path == str(log) and batch.tag == "kube.shop.web-1"
    assert batch.meta == {"host": "node-1", "kubernetes.namespace": "shop",
                          "kubernetes.pod": "web-1", "kubernetes.container": "nginx",
                          "kubernetes.container_id": CID}


def test_file_offsets_and_bytes_behind_are_published_for_status(
        tmp_path, make_agent, tail, r, prefix) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(lines("a", 10))
    h = make_agent([tail(logs / "*.log")]).start()
    h.wait_lines(10)
    key = Keys(prefix).worker(h.runtime.lifecycle.id)

    def published() -> dict | None:
        raw = r.get(key)
        doc = orjson.loads(raw) if raw else None
        files = doc.get("files", {}) if doc else {}
        return doc if files.get("total") == 1 and files["shown"][0]["offset"] else None

    doc = wait_for(published, message="file state in the lifecycle record")
    h.stop()
    (row,) = doc["files"]["shown"]
    assert row["path"] == str(logs / "a.log")
    assert row["offset"] == row["size"] == 90 and row["behind"] == 0
    assert row["state"] == "idle" and row["input"] == "tail.0"
    assert doc["files"]["open"] == 1 and doc["files"]["bytes_behind"] == 0


def test_agent_process_flushes_pending_message_and_exits_zero_on_sigterm(
        tmp_path, redis_url, prefix, r) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(f"{T} stdout F whole\n{T} stdout P pending\n".encode())
    cfg = write_config(tmp_path / "agent.yaml", {
        "service": {"data_dir": str(tmp_path / "data"), "partitions": 1, "prefix": prefix},
        "pipeline": {"inputs": [{"name": "tail", "path": str(logs / "*.log"), "format": "cri",
                                 "read_from_head": True, "partial_flush_ms": 600_000}],
                     "outputs": [{"name": "stdout"}]},
    })
    agent = Role("agent", cfg, redis_url).start()
    raw = Keys(prefix).raw(0)
    wait_for(lambda: r.xlen(raw) >= 1, message="first batch")
    assert agent.stop() == 0, agent.output()[-2000:]
    from tailrace.wire import decode_raw
    shipped = [ln for _, f in r.xrange(raw) for ln in decode_raw(f).lines]
    assert shipped == [b"whole", b"pending"]
    assert os.path.exists(tmp_path / "data")
    client = redis.Redis.from_url(redis_url)
    assert client.hget(Keys(prefix).offsets(0), decode_raw(r.xrange(raw)[-1][1]).file) == str(
        (logs / "a.log").stat().st_size).encode()
    client.close()


def test_redis_rolling_back_its_last_writes_makes_an_idle_file_read_again(
        tmp_path, make_agent, tail, r, prefix, monkeypatch) -> None:
    """A Redis that restarted without its last second (AOF everysec) or failed over to a
    replica that missed it has lost a file's last batch: the agent re-reads it by itself,
    even though the file gets no new line (no PRODUCE meets a CONFLICT to say so)."""
    import edge_agent.agent as agent_mod

    monkeypatch.setattr(agent_mod, "VERIFY_INTERVAL_S", 0.2)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(lines("a", 100))
    h = make_agent([tail(logs / "*.log", batch_lines=40)], partitions=1)
    h.start().wait_lines(100)
    keys = Keys(prefix)
    # Roll Redis back to after the first batch: the later batches and offset moves vanish.
    entries = r.xrange(keys.raw(0))
    assert len(entries) == 3
    first_end = decode_raw(entries[0][1]).end
    r.xdel(keys.raw(0), *[e[0] for e in entries[1:]])
    (field,) = r.hkeys(keys.offsets(0))
    r.hset(keys.offsets(0), field, first_end)
    s = h.wait_lines(100)
    wait_for(lambda: h.agent is not None
             and h.agent.status.counters.get("offsets_rolled_back", 0) == 1,
             message="the roll-back noticed")
    h.stop()
    assert s.lines == lines("a", 100).splitlines()
    assert int(r.hget(keys.offsets(0), field)) == (logs / "a.log").stat().st_size


def test_a_lost_first_commit_makes_the_file_read_again_from_where_it_started(
        tmp_path, make_agent, tail, r, prefix, monkeypatch) -> None:
    import edge_agent.agent as agent_mod

    monkeypatch.setattr(agent_mod, "VERIFY_INTERVAL_S", 0.2)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(lines("a", 30))
    h = make_agent([tail(logs / "*.log")], partitions=1)
    h.start().wait_lines(30)
    keys = Keys(prefix)
    r.delete(keys.offsets(0), keys.raw(0))  # the first commit never reached the replica
    s = h.wait_lines(30)
    h.stop()
    assert s.lines == lines("a", 30).splitlines()

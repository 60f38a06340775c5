"""The file output: formats, path templates, rotation, and recovery to the last commit.

Most tests drive :class:`FileOutput` directly with a stand-in for the checkpoint hashes
(a dict per partition, updated only on "commit"), and "crash" by dropping the object
without committing: what the process wrote is in the files, what it did not commit is
not in the checkpoint. The last test kills a real ``tailrace sink`` process.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
import redis
from helpers import Role, wait_for
from sinkdata import BASE_TIME, group_done, make_records, preload, running, sink_config

from sinks.context import OutputContext
from sinks.file import FileOutput, FileOutputOptions
from sinks.journal import load_journal, save_journal
from tailrace.jsonbatch import JsonBatch
from tailrace.keys import Keys
from tailrace.wire import decode_processed, encode_processed


class Harness:
    """One FileOutput life over a persistent state dir and fake checkpoint hashes."""

    def __init__(self, tmp: Path, **options: Any) -> None:
        self.tmp = tmp
        self.options = {"name": "file", "path": str(tmp / "out" / "{tag}.log"), **options}
        self.ckpt: dict[int, dict[bytes, bytes]] = {0: {}, 1: {}}
        self.now = BASE_TIME
        self.out = self._new()

    def _new(self) -> FileOutput:
        ctx = OutputContext("file.0", self.tmp / "state", lambda p: Path(p))
        out = FileOutput(FileOutputOptions(**self.options), ctx)
        out.clock = lambda: self.now
        return out

    def write(self, records: list[dict[str, Any]]) -> None:
        self.out.write_batch(records)

    def commit(self, partition: int = 0) -> None:
        for k, v in self.out.checkpoint().items():
            self.ckpt[partition][k.encode()] = str(v).encode()
        self.out.committed()  # what the sink worker does once the commit is in Redis

    def crash_and_recover(self) -> None:
        self.out._close_all()  # the process dies: written bytes stay, nothing is committed
        self.out = self._new()
        self.out.recover(list(self.ckpt.values()))


def lines_of(*paths: Path) -> list[str]:
    out: list[str] = []
    for p in paths:
        data = p.read_bytes()
        assert not data or data.endswith(b"\n"), f"{p} ends with a partial line"
        out += [orjson.loads(line)["_id"] for line in data.splitlines()]
    return out


def generations(path: Path) -> list[Path]:
    """Rotated files oldest first, then the active one."""
    rotated = sorted((p for p in path.parent.glob(path.name + ".*")),
                     key=lambda p: int(p.name.rsplit(".", 1)[1]))
    return [*rotated, path] if path.exists() else rotated


def test_records_go_to_the_file_of_their_tag_and_utc_day(tmp_path: Path) -> None:
    h = Harness(tmp_path, path=str(tmp_path / "out" / "{tag}-%Y-%m-%d.log"))
    recs = make_records(2, tag="a") + make_records(1, start=2, tag="b")
    recs[1]["time"] = BASE_TIME + 86400
    h.write(recs)
    assert lines_of(tmp_path / "out" / "a-2023-11-14.log") == ["r0000000"]
    assert lines_of(tmp_path / "out" / "a-2023-11-15.log") == ["r0000001"]
    assert lines_of(tmp_path / "out" / "b-2023-11-14.log") == ["r0000002"]


@pytest.mark.parametrize("fmt, expected", [
    ("template", b"1700000000.0 hello\n"),
    ("plain", b"hello\n"),
])
def test_line_formats_write_one_line_per_record(tmp_path: Path, fmt: str,
                                                expected: bytes) -> None:
    h = Harness(tmp_path, format=fmt)
    h.write([{"_id": "x", "_tag": "t", "time": BASE_TIME, "log": "hello"}])
    assert (tmp_path / "out" / "t.log").read_bytes() == expected


def test_msgpack_format_writes_a_stream_of_maps(tmp_path: Path) -> None:
    h = Harness(tmp_path, format="msgpack")
    h.write(make_records(3, tag="t"))
    unpacked = list(msgpack.Unpacker(open(tmp_path / "out" / "t.log", "rb"), raw=False))
    assert [r["_id"] for r in unpacked] == ["r0000000", "r0000001", "r0000002"]


def test_recovery_cuts_an_uncommitted_batch_and_a_partial_line(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.write(make_records(5))
    h.commit()
    h.write(make_records(5, start=5))
    with open(tmp_path / "out" / "web.app.log", "ab") as f:
        f.write(b'{"_id":"half')  # killed in the middle of a write
    h.crash_and_recover()
    assert lines_of(tmp_path / "out" / "web.app.log") == [f"r{i:07d}" for i in range(5)]
    h.write(make_records(5, start=5))  # the redelivery
    assert lines_of(tmp_path / "out" / "web.app.log") == [f"r{i:07d}" for i in range(10)]


def test_a_file_that_existed_before_is_cut_back_to_its_journaled_size(tmp_path: Path) -> None:
    target = tmp_path / "out" / "web.app.log"
    target.parent.mkdir(parents=True)
    target.write_bytes(b'{"_id":"older"}\n')
    h = Harness(tmp_path)
    h.write(make_records(3))  # never committed
    h.crash_and_recover()
    assert lines_of(target) == ["older"]


def test_redis_losing_its_checkpoints_never_cuts_delivered_lines(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.write(make_records(3))
    h.commit()
    h.ckpt = {0: {}, 1: {}}  # Redis came back empty (wiped, or failed over to an empty node)
    h.crash_and_recover()
    assert lines_of(tmp_path / "out" / "web.app.log") == [f"r{i:07d}" for i in range(3)]


def test_latest_commit_wins_even_when_a_file_shrank_in_between(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.write(make_records(10))
    h.commit(0)
    h.crash_and_recover()
    (tmp_path / "out" / "web.app.log").unlink()  # an operator removed it meanwhile
    h.write(make_records(2, start=10))
    h.commit(1)  # smaller size, but the later commit
    h.write(make_records(2, start=12))  # uncommitted
    h.crash_and_recover()
    assert lines_of(tmp_path / "out" / "web.app.log") == ["r0000010", "r0000011"]


def test_size_rotation_happens_between_batches_and_numbers_files_oldest_first(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, rotate_bytes=1000)
    for i in range(6):
        h.write(make_records(5, start=i * 5))
        h.commit()
    files = generations(tmp_path / "out" / "web.app.log")
    assert [p.name for p in files[:2]] == ["web.app.log.1", "web.app.log.2"]
    assert lines_of(*files) == [f"r{i:07d}" for i in range(30)]
    for p in files[:-1]:
        assert p.stat().st_size >= 1000
        assert p.stat().st_size < 1000 + 5 * 300  # passes the limit by one batch at most


def test_a_rotation_not_yet_committed_is_undone_on_recovery(tmp_path: Path) -> None:
    h = Harness(tmp_path, rotate_bytes=500)
    h.write(make_records(5))
    h.commit()
    h.write(make_records(5, start=5))  # rotates web.app.log to .1 first, then writes
    assert (tmp_path / "out" / "web.app.log.1").exists()
    h.crash_and_recover()
    assert not (tmp_path / "out" / "web.app.log.1").exists()
    assert lines_of(tmp_path / "out" / "web.app.log") == [f"r{i:07d}" for i in range(5)]
    h.write(make_records(5, start=5))
    h.commit()
    assert lines_of(*generations(tmp_path / "out" / "web.app.log")) == [
        f"r{i:07d}" for i in range(10)]


def test_a_committed_rotation_is_kept_on_recovery(tmp_path: Path) -> None:
    h = Harness(tmp_path, rotate_bytes=500)
    h.write(make_records(5))
    h.commit()
    h.write(make_records(5, start=5))
    h.commit()
    h.write(make_records(5, start=10))  # uncommitted, in generation 1
    h.crash_and_recover()
    files = generations(tmp_path / "out" / "web.app.log")
    assert [p.name for p in files] == ["web.app.log.1", "web.app.log"]
    assert lines_of(*files) == [f"r{i:07d}" for i in range(10)]


def test_recovery_never_renames_a_rotated_file_it_did_not_make(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "web.app.log.1").write_bytes(b'{"_id":"from-an-older-pipeline"}\n')
    h = Harness(tmp_path, rotate_bytes=10_000)
    h.write(make_records(3))
    h.commit()
    h.crash_and_recover()
    assert lines_of(out / "web.app.log.1") == ["from-an-older-pipeline"]
    assert lines_of(out / "web.app.log") == ["r0000000", "r0000001", "r0000002"]


def test_rotation_skips_generation_names_that_are_taken(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "web.app.log.1").write_bytes(b'{"_id":"older"}\n')
    h = Harness(tmp_path, rotate_bytes=300)
    h.write(make_records(3))
    h.commit()
    h.write(make_records(3, start=3))
    h.commit()
    assert lines_of(out / "web.app.log.1") == ["older"]
    assert lines_of(out / "web.app.log.2", out / "web.app.log") == [
        f"r{i:07d}" for i in range(6)]


def test_time_rotation_starts_a_new_file_when_the_generation_is_old(tmp_path: Path) -> None:
    h = Harness(tmp_path, rotate_interval_s=3600)
    h.write(make_records(2))
    h.commit()
    h.now += 1800
    h.write(make_records(2, start=2))
    h.commit()
    assert not (tmp_path / "out" / "web.app.log.1").exists()
    h.now += 1801
    h.crash_and_recover()  # the generation's start survives a restart (it is committed)
    h.write(make_records(2, start=4))
    h.commit()
    assert lines_of(tmp_path / "out" / "web.app.log.1") == [f"r{i:07d}" for i in range(4)]
    assert lines_of(tmp_path / "out" / "web.app.log") == ["r0000004", "r0000005"]


def test_rotate_keep_removes_the_oldest_generations(tmp_path: Path) -> None:
    h = Harness(tmp_path, rotate_bytes=200, rotate_keep=2)
    for i in range(6):
        h.write(make_records(2, start=i * 2))
        h.commit()
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["web.app.log", "web.app.log.4", "web.app.log.5"]


def test_only_max_open_files_stay_open(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_open_files=2)
    for tag in "abcd":
        h.write(make_records(1, tag=tag))
    assert len(h.out.fds) == 2
    h.write(make_records(1, start=1, tag="a"))
    assert lines_of(tmp_path / "out" / "a.log") == ["r0000000", "r0000001"]


@pytest.mark.parametrize("seed", range(12))
def test_random_crashes_with_rotation_leave_every_record_once_in_order(
        tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    h = Harness(tmp_path, rotate_bytes=rng.choice([300, 700, 2000]),
                rotate_interval_s=rng.choice([0, 50]))
    delivered = 0  # records committed so far (the stream's acked prefix)
    total = 200
    while delivered < total:
        n = min(rng.randint(1, 9), total - delivered)
        h.write(make_records(n, start=delivered))
        h.now += rng.uniform(0, 20)
        if rng.random() < 0.3:  # dies after writing, before the commit
            if rng.random() < 0.5:
                active = tmp_path / "out" / "web.app.log"
                with open(active, "ab") as f:
                    f.write(b'{"_id":"partial')
            h.crash_and_recover()
            continue  # the batch is redelivered
        h.commit(rng.randint(0, 1))
        delivered += n
        if rng.random() < 0.1:  # dies right after a commit
            h.crash_and_recover()
    h.crash_and_recover()
    assert lines_of(*generations(tmp_path / "out" / "web.app.log")) == [
        f"r{i:07d}" for i in range(total)]


# -- a real sink process, killed ---------------------------------------------------------

def _bytes_in(folder: Path) -> int:
    """Bytes in the files of ``folder``; a file rotated away meanwhile counts as 0."""
    total = 0
    for p in folder.iterdir() if folder.exists() else []:
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            continue
    return total


def _all_lines(out_dir: Path) -> list[str]:
    files = [p for p in out_dir.iterdir() if p.is_file()]
    ids: list[str] = []
    for p in files:
        ids += lines_of(p)
    return ids


@pytest.mark.slow
def test_sink_killed_during_writes_leaves_every_line_once_and_no_partial_line(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    partitions, total, per_entry = 4, 120_000, 500
    client = redis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    preload(client, keys, partitions, ["files"],
            (make_records(per_entry, start=i) for i in range(0, total, per_entry)))
    out_dir = tmp_path / "out"
    cfg = sink_config(tmp_path, prefix, [{"name": "file", "alias": "files",
                                          "path": str(out_dir / "all.log"),
                                          "rotate_bytes": "2MiB"}], partitions=partitions)
    line = len(orjson.dumps(make_records(1, start=total // 2)[0])) + 1
    sink = Role("sink", cfg, redis_url).start()
    try:
        for share in (0.15, 0.45, 0.75):
            def written(n: int = int(total * share * line)) -> bool:
                return _bytes_in(out_dir) > n
            wait_for(written, timeout=120, interval=0.02,
                     message=f"{share:.0%} of the lines written")
            sink.kill()  # SIGKILL, mid-stream
            sink.log_file.close()
            sink = Role("sink", cfg, redis_url).start()
        wait_for(lambda: group_done(client, keys, "files", partitions), timeout=180,
                 interval=0.2, message="every entry acknowledged by the file sink")
        time.sleep(0.2)
    finally:
        code = sink.stop()
        client.close()
    assert code == 0, sink.output()[-3000:]
    ids = _all_lines(out_dir)
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicated lines"
    assert len(ids) == total
    assert len(list(out_dir.iterdir())) > 3, "rotation did not happen"


def test_a_fenced_batch_is_cut_before_another_partition_commits(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    import threading

    from sinkdata import group_done as done

    from tailrace.broker import connect
    from tailrace.cli.registry import build_registry
    from tailrace.cli.roles import sink_consumer
    from tailrace.config import load_config
    from tailrace.keys import sink_group
    from tailrace.lifecycle import Lifecycle

    r = redis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    preload(r, keys, 2, ["files"], (make_records(50, start=i) for i in range(0, 2000, 50)))
    out = tmp_path / "out" / "all.log"
    cfg = sink_config(tmp_path, prefix, [{"name": "file", "alias": "files", "path": str(out)}],
                      partitions=2)
    config = load_config(cfg, build_registry(entry_points=False))
    client = connect(redis_url)
    consumer = sink_consumer(config, keys, Lifecycle("sink"), config.output("files"), client)
    handler = consumer.handler
    handle = handler.handle
    stolen = threading.Event()

    def handle_then_lose_the_lease(partition: int, entries: Any, guard: Any) -> Any:
        result = handle(partition, entries, guard)  # written and fsynced, not committed
        if partition == 0 and not stolen.is_set():
            stolen.set()  # another worker takes partition 0 for a moment: the commit is fenced
            r.set(keys.lease(0, sink_group("files")), "thief:999999", px=1500)
        return result

    handler.handle = handle_then_lose_the_lease  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: stolen.is_set() and done(r, keys, "files", 2), timeout=60,
                 message="every entry committed after the fenced batch")
    finally:
        stop.set()
        thread.join(timeout=30)
        handler.close()
        client.close()
        r.close()
    ids = lines_of(out)
    assert len(ids) == len(set(ids)) == 2000, f"{len(ids) - len(set(ids))} duplicated lines"


def test_a_full_disk_takes_the_partial_batch_back_and_asks_for_a_retry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os as real_os

    from tailrace.outcome import Retry

    h = Harness(tmp_path)
    h.write(make_records(5))
    h.commit()
    calls = {"n": 0}
    write = real_os.write

    def write_then_fill_the_disk(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return write(fd, bytes(data[:50]))  # part of a line lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sinks.file.os.write", write_then_fill_the_disk)
    outcome = h.out.write_batch(make_records(5, start=5))
    assert isinstance(outcome, Retry) and len(outcome.records) == 5
    assert "No space left on device" in outcome.reason and "web.app.log" in outcome.reason
    monkeypatch.setattr("sinks.file.os.write", write)
    assert lines_of(tmp_path / "out" / "web.app.log") == [f"r{i:07d}" for i in range(5)]
    h.write(outcome.records)
    h.commit()
    h.crash_and_recover()
    assert lines_of(tmp_path / "out" / "web.app.log") == [f"r{i:07d}" for i in range(10)]


@pytest.mark.parametrize("fmt", ["json", "plain", "template", "msgpack"])
def test_a_v2_batch_writes_the_same_files_as_the_records_it_carries(
        tmp_path: Path, fmt: str) -> None:
    template = "{tag}-%Y-%m-%d.log"
    recs = make_records(120, tag="a") + make_records(30, start=120, tag="b")
    for r in recs[::7]:
        r["time"] = BASE_TIME + 86400  # some records on the next day
    recs[5]["_raw"], recs[5]["log"] = b"caf\xe9", "caf\ufffd"  # a line that was not UTF-8
    as_maps = Harness(tmp_path / "maps", format=fmt, path=str(tmp_path / "maps" / template))
    as_maps.write([dict(r) for r in recs])
    encoded = decode_processed({b"v": b"2", b"b": encode_processed(recs)})
    assert isinstance(encoded, JsonBatch)
    as_json = Harness(tmp_path / "v2", format=fmt, path=str(tmp_path / "v2" / template))
    as_json.write(encoded)
    names = sorted(p.name for p in (tmp_path / "maps").glob("*.log"))
    assert names == sorted(p.name for p in (tmp_path / "v2").glob("*.log")) and len(names) == 4
    for name in names:
        assert (tmp_path / "v2" / name).read_bytes() == (tmp_path / "maps" / name).read_bytes()


def test_v1_entries_left_by_older_processors_are_delivered_once_beside_v2_ones(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    r = redis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    records = make_records(3000)
    # Entries of both versions, alternating on each partition, as in a rolling upgrade.
    preload(r, keys, 2, ["files"], (records[i:i + 100] for i in range(0, 3000, 100)),
            version=0)
    for p in range(2):
        assert {f[b"v"] for _, f in r.xrange(keys.out(p))} == {b"1", b"2"}
    out = tmp_path / "out" / "all.log"
    cfg = sink_config(tmp_path, prefix, [{"name": "file", "alias": "files", "path": str(out)}],
                      partitions=2)
    with running(cfg, redis_url, "files"):
        wait_for(lambda: group_done(r, keys, "files", 2), timeout=60,
                 message="every entry of both versions acknowledged")
    r.close()
    lines = out.read_bytes().splitlines(keepends=True)
    assert sorted(lines) == sorted(orjson.dumps(rec) + b"\n" for rec in records)


def test_several_v2_entries_in_one_batch_keep_each_records_tag_time_and_raw_bytes(
        tmp_path: Path) -> None:
    """The worker concatenates a read's entries: each record keeps its own tag, time and
    original bytes, in order, across the entries."""
    template = "{tag}-%Y-%m-%d.log"
    parts = [make_records(50, tag="a"), make_records(40, start=50, tag="b"),
             make_records(30, start=90, tag="a", base_time=BASE_TIME + 86400)]
    parts[1][7]["_raw"], parts[1][7]["log"] = b"caf\xe9", "caf\ufffd"
    parts[2][3]["_raw"], parts[2][3]["log"] = b"\xff", "\ufffd"
    recs = [r for p in parts for r in p]
    as_maps = Harness(tmp_path / "maps", format="plain", path=str(tmp_path / "maps" / template))
    as_maps.write([dict(r) for r in recs])
    batches = [decode_processed({b"v": b"2", b"b": encode_processed(p)}) for p in parts]
    assert all(isinstance(b, JsonBatch) for b in batches)
    joined = JsonBatch.concat(batches)  # type: ignore[arg-type]
    assert joined.tags == [r["_tag"] for r in recs]
    assert joined.times == [r["time"] for r in recs]
    assert joined.raws == {57: b"caf\xe9", 93: b"\xff"}
    as_v2 = Harness(tmp_path / "v2", format="plain", path=str(tmp_path / "v2" / template))
    as_v2.write(joined)
    names = sorted(p.name for p in (tmp_path / "maps").glob("*.log"))
    assert names == sorted(p.name for p in (tmp_path / "v2").glob("*.log")) and len(names) == 3
    for name in names:
        assert (tmp_path / "v2" / name).read_bytes() == (tmp_path / "maps" / name).read_bytes()


def test_the_journal_is_durable_when_saved_its_folder_fsynced_after_the_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut right after save_journal must not bring the old journal back: the
    rename is made durable by an fsync of the folder, after the file's own fsync."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "state" / "files.json"
    save_journal(path, {"/out/a.log": 12}, {"/out/b.log": 3})
    assert synced == [str(path.with_suffix(".tmp")), str(path.parent)]
    assert load_journal(path) == ({"/out/a.log": 12}, {"/out/b.log": 3})

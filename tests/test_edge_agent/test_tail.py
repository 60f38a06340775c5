"""The tail input against real files and a real Redis: rotation, truncation, deletion,
descriptor limits, long lines and pending messages."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import wait_for

from tailrace.record import record_id


def lines(prefix: str, n: int, start: int = 0) -> bytes:
    return b"".join(b"%s-%06d\n" % (prefix.encode(), i) for i in range(start, start + n))


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def assert_no_id_collision(records: list[tuple[str, int, bytes]]) -> None:
    ids = Counter(record_id("node-1", f, off) for f, off, _ in records)
    dups = [k for k, n in ids.items() if n > 1]
    assert not dups, f"record ids used twice: {dups[:3]}"


def test_rename_and_create_rotation_reads_old_file_to_its_end_and_new_file_from_start(
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(lines("a", 100))
    h = make_agent([tail(logs / "*.log", rotate_wait_s=30)]).start()
    h.wait_lines(100)
    os.rename(log, logs / "app.log.1")
    log.write_bytes(lines("b", 50))
    append(logs / "app.log.1", lines("a", 20, 100))  # late writes of the app before it reopens
    s = h.wait_lines(170)
    assert Counter(s.lines) == Counter((lines("a", 120) + lines("b", 50)).splitlines())
    per_file = {f: [ln for b in bs for ln in b.lines] for f, bs in s.by_file().items()}
    assert sorted(per_file.values()) == [lines("a", 120).splitlines(),
                                        lines("b", 50).splitlines()]
    h.stop()


def test_rotated_file_is_closed_only_after_rotate_wait(tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(lines("a", 10))
    h = make_agent([tail(logs / "*.log", rotate_wait_s=1.0)]).start()
    h.wait_lines(10)
    inp = h.agent.inputs[0]
    os.rename(logs / "app.log", logs / "old.txt")
    rotated_at = time.monotonic()
    wait_for(lambda: any(tf.rotated_at for tf in list(inp.table.files.values())),
             message="rotation noticed")
    append(logs / "old.txt", lines("a", 5, 10))  # written within rotate_wait: still read
    h.wait_lines(15)
    wait_for(lambda: inp.table.open_count == 0, timeout=10, message="rotated file closed")
    assert time.monotonic() - rotated_at >= 1.0
    h.stop()


def test_rotated_file_without_final_newline_ships_its_last_line(tmp_path, make_agent,
                                                                  tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(lines("a", 3) + b"no newline at the end")
    h = make_agent([tail(logs / "*.log", rotate_wait_s=0.2)]).start()
    h.wait_lines(3)
    os.rename(logs / "app.log", logs / "app.log.1")
    s = h.wait_lines(4)
    assert s.lines[-1] == b"no newline at the end"
    h.stop()


def test_copytruncate_with_the_same_first_line_gets_a_new_identity_and_no_id_collision(
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(b"# header\n" + lines("old", 100))
    h = make_agent([tail(logs / "*.log")]).start()
    h.wait_lines(101)
    with open(log, "r+b") as f:  # logrotate copytruncate: copy elsewhere, truncate in place
        f.truncate(0)
    append(log, b"# header\n" + lines("new", 10))
    s = h.wait_lines(112)
    files = list(s.by_file())
    assert len(files) == 2 and files[1] == files[0] + ":g1"
    assert s.lines[101:] == (b"# header\n" + lines("new", 10)).splitlines()
    assert_no_id_collision(s.records())
    h.stop()
    h.start()  # the generation survives a restart: nothing is read twice
    append(log, lines("new", 5, 10))
    s = h.wait_lines(117)
    h.stop()
    assert len(s.lines) == 117
    assert_no_id_collision(s.records())


def test_truncation_while_the_agent_is_down_is_found_on_restart(tmp_path, make_agent,
                                                                tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(b"# header\n" + lines("old", 200))
    h = make_agent([tail(logs / "*.log")])
    h.start().wait_lines(201)
    h.stop()
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, b"# header\n" + lines("new", 3))
    h.start()
    s = h.wait_lines(205)
    h.stop()
    assert s.lines[201:] == (b"# header\n" + lines("new", 3)).splitlines()
    assert s.batches[-1][1].file.endswith(":g1")
    assert_no_id_collision(s.records())


def test_file_rewritten_in_place_with_another_first_line_is_read_from_its_start(
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(lines("old", 10))
    h = make_agent([tail(logs / "*.log")]).start()
    h.wait_lines(10)
    with open(log, "r+b") as f:  # truncated and regrown past the old size before a look
        f.truncate(0)
        f.write(lines("new", 40))
    s = h.wait_lines(50)
    h.stop()
    assert s.lines[10:] == lines("new", 40).splitlines()


def test_file_deleted_while_open_is_drained_then_closed(tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(lines("a", 5))
    h = make_agent([tail(logs / "*.log", rotate_wait_s=0.3)]).start()
    h.wait_lines(5)
    with open(log, "ab") as writer:  # the app still holds it open and writes after unlink
        log.unlink()
        writer.write(lines("a", 1000, 5))
    s = h.wait_lines(1005)
    inp = h.agent.inputs[0]
    wait_for(lambda: not inp.table.files, message="deleted file closed")
    h.stop()
    assert s.lines == lines("a", 1005).splitlines()


def test_replaced_file_with_a_reused_inode_is_read_from_its_start(tmp_path, make_agent,
                                                                  tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(lines("first", 50))
    h = make_agent([tail(logs / "*.log")])
    h.start().wait_lines(50)
    h.stop()
    log.unlink()
    log.write_bytes(lines("second", 20))  # the file system usually hands out the same inode
    h.start()
    s = h.wait_lines(70)
    h.stop()
    assert s.lines[50:] == lines("second", 20).splitlines()


def replace_reusing_inode(log: Path, data: bytes) -> None:
    """Delete ``log`` and create it again with ``data``; skip unless the new file got the
    old inode (ext4 hands it out again at once, tmpfs never does)."""
    ino = log.stat().st_ino
    log.unlink()
    log.write_bytes(data)
    if log.stat().st_ino != ino:
        pytest.skip("the file system did not hand out the same inode again")


def rewrite_in_place(log: Path, data: bytes) -> None:
    """Truncate ``log`` and write ``data`` into it (same device and inode)."""
    with open(log, "r+b") as f:
        f.truncate(0)
        f.write(data)


@pytest.mark.parametrize("change", [replace_reusing_inode, rewrite_in_place],
                         ids=["replaced_reusing_the_inode", "truncated_and_regrown"])
def test_a_file_changed_under_the_same_identity_while_the_agent_is_down_is_read_from_its_start(  # noqa: E501
        tmp_path, make_agent, tail, change) -> None:
    """Same device, inode and first line, so the same identity, and longer than the
    committed offset: only the bytes before that offset tell it is another file (or the
    same file rewritten). Either way it is a new generation, read from byte 0, once."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(b"# header\n" + lines("old", 20))
    h = make_agent([tail(logs / "*.log")])
    h.start().wait_lines(21)
    h.stop()
    new = b"# header\n" + lines("new", 60)
    change(log, new)
    h.start().wait_read_to_end(log)
    h.stop()
    s = h.shipped()
    assert s.lines[21:] == new.splitlines()
    assert s.batches[-1][1].file.endswith(":g1")
    assert_no_id_collision(s.records())
    h.start().wait_read_to_end(log)  # the new generation survives a restart
    h.stop()
    assert len(h.shipped().lines) == 82


def test_file_truncated_and_regrown_in_place_with_the_same_first_line_is_read_from_its_start(
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(b"# header\n" + lines("old", 10))
    h = make_agent([tail(logs / "*.log")]).start()
    h.wait_lines(11)
    new = b"# header\n" + lines("new", 40)
    rewrite_in_place(log, new)  # past the old size, likely before the agent looks again
    h.wait_read_to_end(log)
    h.stop()
    s = h.shipped()
    assert s.lines[11:] == new.splitlines()
    assert_no_id_collision(s.records())


def test_idle_file_closed_by_the_lru_then_rewritten_with_the_same_first_line_is_read_from_its_start(  # noqa: E501
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(b"# header\n" + lines("old", 20))
    h = make_agent([tail(logs / "*.log", max_open_files=2)]).start()
    h.wait_lines(21)
    for i in range(3):  # newer files push the idle app.log out of the descriptor LRU
        (logs / f"other{i}.log").write_bytes(lines(f"o{i}", 1))
    h.wait_lines(24)
    inp = h.agent.inputs[0]
    ino = log.stat().st_ino
    wait_for(lambda: any(tf.ident.fid.ino == ino and tf.fd < 0
                         for tf in list(inp.table.files.values())),
             message="app.log closed by the LRU")
    new = b"# header\n" + lines("new", 40)
    rewrite_in_place(log, new)  # or replaced by a file that got its inode: the same case
    h.wait_read_to_end(log)
    h.stop()
    s = h.shipped()
    assert s.lines[24:] == new.splitlines()
    assert_no_id_collision(s.records())


def test_idle_files_are_closed_under_max_open_files_and_reopened_when_they_grow(
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(30):
        (logs / f"f{i:02d}.log").write_bytes(lines(f"f{i:02d}", 10))
    h = make_agent([tail(logs / "*.log", max_open_files=5)]).start()
    h.wait_lines(300)
    inp = h.agent.inputs[0]
    assert inp.table.open_count <= 5
    for i in (0, 7, 29):
        append(logs / f"f{i:02d}.log", lines(f"f{i:02d}", 3, 10))
    s = h.wait_lines(309)
    assert inp.table.open_count <= 5
    os.rename(logs / "f03.log", logs / "f03.log.1")  # a closed file rotated after a write
    append(logs / "f03.log.1", lines("f03", 2, 10))
    s = h.wait_lines(311)
    h.stop()
    assert sorted(s.lines) == sorted(
        b"".join(lines(f"f{i:02d}", 10 + {0: 3, 7: 3, 29: 3, 3: 2}.get(i, 0))
                 for i in range(30)).splitlines())


def test_busy_files_are_read_fairly(tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("one", "two", "three"):
        (logs / f"{name}.log").write_bytes(lines(name, 30_000))
    h = make_agent([tail(logs / "*.log", batch_lines=1000)]).start()
    s = h.wait_lines(90_000, timeout=60)
    h.stop()
    assert max(len(b.lines) for _, b in s.batches) <= 1000
    first_half = Counter(ln.split(b"-")[0] for ln in s.lines[:45_000])
    assert min(first_half.values()) >= 10_000, f"one file waited for the others: {first_half}"


def test_long_lines_are_split_truncated_or_skipped_and_never_stall_the_file(
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    for policy in ("split", "truncate", "skip"):
        (logs / policy).mkdir(parents=True)
        (logs / policy / "app.log").write_bytes(
            b"before\n" + b"x" * 1000 + b"\n" + b"after\n")
    h = make_agent([tail(logs / p / "*.log", long_lines=p, max_line_bytes=300, alias=p)
                    for p in ("split", "truncate", "skip")]).start()
    wait_for(lambda: {b.input for _, b in h.shipped().batches} == {"split", "truncate", "skip"}
             and all(b"after" in [ln for _, b in h.shipped().batches if b.input == p
                                  for ln in b.lines] for p in ("split", "truncate", "skip")),
             message="every file read past its long line")
    s = h.shipped()
    counters = dict(h.agent.status.counters)
    h.stop()
    got = {p: [ln for _, b in s.batches if b.input == p for ln in b.lines]
           for p in ("split", "truncate", "skip")}
    assert got["split"] == [b"before", b"x" * 300, b"x" * 300, b"x" * 300, b"x" * 100,
                            b"after"]
    assert got["truncate"] == [b"before", b"x" * 300, b"after"]
    assert got["skip"] == [b"before", b"after"]
    assert counters["long_lines_split"] == 3
    assert counters["long_lines_truncate"] == 1 and counters["long_lines_skip"] == 1
    ends = {b.input: b.end for _, b in s.batches}
    assert set(ends.values()) == {1014}  # every offset reached the end of its file


def test_unfinished_cri_partial_is_flushed_after_partial_flush_ms(tmp_path, make_agent,
                                                                 tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    t = "2024-05-01T12:00:00.000000000Z"
    (logs / "c.log").write_bytes(f"{t} stdout F done\n{t} stdout P never-\n"
                                 f"{t} stdout P finished\n".encode())
    h = make_agent([tail(logs / "*.log", format="cri", partial_flush_ms=300)]).start()
    s = h.wait_lines(1)
    assert s.lines == [b"done"]
    s = h.wait_lines(2, timeout=10)
    assert s.lines == [b"done", b"never-finished"]
    append(logs / "c.log", f"{t} stdout F next\n".encode())
    s = h.wait_lines(3)
    h.stop()
    assert s.lines[-1] == b"next"
    assert h.agent.status.counters.get("pending_flushed_timeout") == 1


def test_pending_multiline_message_is_flushed_after_flush_ms(tmp_path, make_agent,
                                                              tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"2024 ERROR x\n\tat a\n\tat b\n")
    h = make_agent([tail(logs / "*.log", multiline={"start": r"^\d{4} ", "flush_ms": 300})])
    h.start()
    s = h.wait_lines(1, timeout=10)
    h.stop()
    assert s.lines == [b"2024 ERROR x\n\tat a\n\tat b"]
    assert h.agent.status.counters.get("pending_flushed_timeout") == 1


def test_pending_multiline_message_is_flushed_on_shutdown(tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"2024 INFO y\n\tcontinued\n2024 WARN z\n\tmore\n")
    h = make_agent([tail(logs / "*.log",
                         multiline={"start": r"^\d{4} ", "flush_ms": 600_000})]).start()
    s = h.wait_lines(1)  # the first message is complete: the second start line ended it
    assert s.lines == [b"2024 INFO y\n\tcontinued"]
    h.stop()
    assert h.shipped().lines == [b"2024 INFO y\n\tcontinued", b"2024 WARN z\n\tmore"]
    assert h.agent.status.counters.get("pending_flushed_shutdown") == 1


def test_invalid_utf8_and_binary_bytes_are_shipped_unchanged(tmp_path, make_agent,
                                                             tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    raw = [b"caf\xe9 latin-1", b"\x00\x01\x02\xff binary", b"\xf0\x28\x8c\x28 bad utf-8"]
    (logs / "a.log").write_bytes(b"\n".join(raw) + b"\n")
    h = make_agent([tail(logs / "*.log")]).start()
    s = h.wait_lines(3)
    h.stop()
    assert s.lines == raw


def test_polling_follows_files_without_inotify(tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    h = make_agent([tail(logs / "*.log", inotify=False, refresh_interval_s=0.2)]).start()
    (logs / "a.log").write_bytes(lines("a", 5))
    h.wait_lines(5)
    assert h.agent.watcher is None
    os.rename(logs / "a.log", logs / "a.log.1")
    (logs / "a.log").write_bytes(lines("b", 5))
    append(logs / "a.log.1", lines("a", 2, 5))
    s = h.wait_lines(12)
    h.stop()
    assert sorted(s.lines) == sorted((lines("a", 7) + lines("b", 5)).splitlines())


def test_a_thousand_files_are_followed_with_a_bounded_number_of_descriptors(
        tmp_path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(1000):
        (logs / f"f{i:04d}.log").write_bytes(lines(f"f{i:04d}", 3))
    h = make_agent([tail(logs / "*.log", max_open_files=100)]).start()
    h.wait_lines(3000, timeout=60)
    inp = h.agent.inputs[0]
    assert inp.table.open_count <= 100
    assert len(os.listdir("/proc/self/fd")) < 400  # this test process: agent + pytest
    busy = range(0, 1000, 37)
    for i in busy:
        append(logs / f"f{i:04d}.log", lines(f"f{i:04d}", 2, 3))
    s = h.wait_lines(3000 + 2 * len(busy), timeout=60)
    h.stop()
    assert len(s.lines) == len(set(s.lines)) == 3000 + 2 * len(busy)

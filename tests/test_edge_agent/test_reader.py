"""The reader alone: offsets, the carry of pending messages, bounds (no Redis)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from edge_agent.followed import FileIdentity, TailedFile
from edge_agent.formats import make_decoder, message_limit
from edge_agent.identity import FileId
from edge_agent.multiline import MultilineRule
from edge_agent.options import TailOptions
from edge_agent.reader import Reader

T = "2024-05-01T12:00:00.000000000Z"


def setup(tmp_path: Path, data: bytes, counts: dict[str, int] | None = None,
          **opts: Any) -> tuple[Reader, TailedFile, Path]:
    o = TailOptions.model_validate({"name": "tail", "path": "x", **opts})
    rule = MultilineRule.build(o.multiline) if o.multiline else None
    flush_s = rule.flush_s if rule else o.partial_flush_ms / 1000
    limit = message_limit(o.format, o.max_line_bytes, o.long_lines)
    reader = Reader(o, make_decoder(o.format, rule, limit), o.format != "plain", flush_s,
                    max(o.max_line_bytes, rule.max_bytes if rule else 0),
                    lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n)
                    if counts is not None else None, "tail.0")
    path = tmp_path / "f.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    tf = TailedFile(str(path), fd, FileIdentity(FileId(0, 0, 0), "a", 1), "t", {},
                    size=len(data))
    tf.started = True
    return reader, tf, path


def grow(tf: TailedFile, path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
    tf.size = path.stat().st_size


def drain(reader: Reader, tf: TailedFile, now: float = 0.0) -> None:
    while reader.read(tf, now):
        pass


def test_offsets_stay_ordered_committed_pos_scanned_size(tmp_path: Path) -> None:
    cri = f"{T} stdout F done\n{T} stdout P half-\n".encode()
    reader, tf, path = setup(tmp_path, cri + b"partial", format="cri")
    drain(reader, tf)
    assert tf.buf.lines == [b"done"]
    assert (tf.committed, tf.buf.pos, tf.buf.scanned, tf.size) == (0, cri.index(b"2024", 5),
                                                          len(cri), len(cri) + 7)
    assert tf.buf.carry == cri[tf.buf.pos:]  # the open P run waits in memory, not in the batch
    os.close(tf.fd)


def test_pending_partial_run_is_emitted_when_it_grows_past_max_line_bytes(
        tmp_path: Path) -> None:
    parts = "".join(f"{T} stdout P {'x' * 50}\n" for _ in range(10)).encode()
    reader, tf, path = setup(tmp_path, parts, format="cri", max_line_bytes=256)
    drain(reader, tf)
    assert tf.buf.lines and all(len(ln) <= 350 for ln in tf.buf.lines)
    assert not tf.buf.carry or len(tf.buf.carry) <= 256
    os.close(tf.fd)


def test_pending_message_waits_at_most_max_pending_while_other_streams_write(
        tmp_path: Path) -> None:
    reader, tf, path = setup(tmp_path, f"{T} stdout P never ends\n".encode(), format="cri",
                             partial_flush_ms=100)
    reader.read(tf, 0.0)
    assert tf.buf.carry and not tf.buf.lines
    for step in range(1, 12):  # stderr keeps writing, so the carry never goes quiet
        grow(tf, path, f"{T} stderr F line {step}\n".encode())
        reader.read(tf, step * 0.1)
    assert tf.buf.lines[0] == b"never ends"
    assert b"line 1" in tf.buf.lines
    os.close(tf.fd)


def test_batch_never_exceeds_batch_lines_and_resumes_at_the_cut(tmp_path: Path) -> None:
    data = b"".join(b"line %d\n" % i for i in range(100))
    reader, tf, path = setup(tmp_path, data, batch_lines=30)
    reader.read(tf, 0.0)
    assert len(tf.buf.lines) == 30 and tf.buf.pos == tf.buf.scanned == data.index(b"line 30")
    tf.buf.lines, tf.buf.offsets, tf.buf.nbytes = [], [], 0
    reader.read(tf, 0.0)
    assert tf.buf.lines[0] == b"line 30"
    os.close(tf.fd)


def test_multiline_batch_cut_keeps_messages_whole(tmp_path: Path) -> None:
    data = b"".join(b"start %d\n  more\n" % i for i in range(50))
    reader, tf, path = setup(tmp_path, data, batch_lines=7, multiline={"start": "^start"})
    reader.read(tf, 0.0)
    n = len(tf.buf.lines)
    assert 0 < n <= 7
    assert tf.buf.lines == [b"start %d\n  more" % i for i in range(n)]
    assert data[tf.buf.pos:].startswith(b"start %d\n" % n) and not tf.buf.carry
    os.close(tf.fd)


LONG_CASES = {
    "cri": f"{T} stdout F short\n{T} stderr F {'a' * 150}\n{T} stdout F after\n".encode(),
    "docker": (b'{"log":"short\\n","stream":"stdout","time":"%s"}\n'
               b'{"log":"%s\\n","stream":"stderr","time":"%s"}\n'
               b'{"log":"after\\n","stream":"stdout","time":"%s"}\n'
               % (T.encode(), b"a" * 150, T.encode(), T.encode())),
}
LONG_EXPECTED = {
    "split": [b"short", b"a" * 64, b"a" * 64, b"a" * 22, b"after"],
    "truncate": [b"short", b"a" * 64, b"after"],
    "skip": [b"short", b"after"],
}


@pytest.mark.parametrize("policy", ["split", "truncate", "skip"])
@pytest.mark.parametrize("fmt", ["cri", "docker"])
def test_a_long_container_message_keeps_its_time_and_stream_in_every_piece(
        tmp_path: Path, fmt: str, policy: str) -> None:
    counts: dict[str, int] = {}
    data = LONG_CASES[fmt]
    reader, tf, path = setup(tmp_path, data, counts, format=fmt, max_line_bytes=64,
                             long_lines=policy)
    drain(reader, tf)
    assert tf.buf.lines == LONG_EXPECTED[policy]
    assert tf.buf.streams == ["stdout"] + ["stderr"] * (len(tf.buf.lines) - 2) + ["stdout"]
    assert tf.buf.times is not None and all(t > 1.7e9 for t in tf.buf.times)  # the runtime's time
    # Distinct, ordered offsets: record ids (prefix + offset) stay distinct and stable.
    assert tf.buf.offsets == sorted(set(tf.buf.offsets))
    second = data.index(b"\n") + 1
    assert tf.buf.offsets[1 : len(tf.buf.lines) - 1] == [
        second + 64 * k for k in range(len(tf.buf.lines) - 2)]
    assert counts[f"long_lines_{policy}"] == 1
    assert counts.get("long_line_bytes_skipped", 0) == (150 if policy == "skip" else 0)
    b = tf.buf
    assert b.pos == b.scanned == len(data) and not b.carry  # nothing waits, nothing lost
    os.close(tf.fd)


def test_a_long_partial_run_is_split_in_order_with_the_runs_time_and_stream(
        tmp_path: Path) -> None:
    data = (f"{T} stderr P {'a' * 40}\n{T} stderr P {'b' * 40}\n"
            f"{T} stderr F {'c' * 40}\n").encode()
    reader, tf, path = setup(tmp_path, data, format="cri", max_line_bytes=64)
    drain(reader, tf)
    joined = b"a" * 40 + b"b" * 40 + b"c" * 40
    assert b"".join(tf.buf.lines) == joined and all(len(ln) <= 64 for ln in tf.buf.lines)
    assert tf.buf.streams == ["stderr"] * len(tf.buf.lines)
    assert tf.buf.offsets == sorted(set(tf.buf.offsets))
    os.close(tf.fd)


def test_a_batch_cut_never_separates_or_repeats_the_pieces_of_a_message(
        tmp_path: Path) -> None:
    data = LONG_CASES["cri"]
    reader, tf, path = setup(tmp_path, data, format="cri", max_line_bytes=64, batch_lines=2)
    drain(reader, tf)
    assert tf.buf.lines == LONG_EXPECTED["split"]  # every piece once, in order
    os.close(tf.fd)

"""File identity: fingerprints, generations, partitions and where a file resumes."""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.identity import (
    FINGERPRINT_BYTES,
    base_of,
    end_checksum,
    fingerprint,
    has_end,
    identity_key,
    partition_for,
    resume_point,
)


def fid_of(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return fingerprint(fd, os.fstat(fd))
    finally:
        os.close(fd)


def test_fingerprint_does_not_change_as_the_file_grows(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"first line\n")
    before = fid_of(log)
    with open(log, "ab") as f:
        f.write(b"second line\n" * 100)
    assert fid_of(log) == before


def test_same_inode_with_another_first_line_is_another_file(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\n")
    a = fid_of(log)
    with open(log, "r+b") as f:
        f.write(b"two\n")
    b = fid_of(log)
    assert (a.dev, a.ino) == (b.dev, b.ino) and a.key("n") != b.key("n")


def test_file_without_a_complete_first_line_has_no_identity_yet(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"partial")
    assert fid_of(log) is None
    log.write_bytes(b"x" * FINGERPRINT_BYTES)  # a long first line counts its first bytes
    assert fid_of(log) is not None


def test_generation_is_part_of_the_identity_and_keeps_the_partition() -> None:
    base = "node:803:1a2b:deadbeef"
    assert identity_key(base, 0) == base
    assert identity_key(base, 3) == base + ":g3"
    assert base_of(identity_key(base, 3)) == base == base_of(base)
    assert 0 <= partition_for(base, 8) < 8
    assert partition_for(base, 8) == partition_for(base, 8)


def test_resume_point_prefers_redis_then_local_and_bumps_generation_when_truncated() -> None:
    assert resume_point(100, 0, 40, 60, False) == (0, 40)  # Redis wins
    assert resume_point(100, 0, None, 60, False) == (0, 60)  # else the local checkpoint
    assert resume_point(100, 0, None, None, False) == (0, None)  # else head/end by policy
    assert resume_point(100, 2, None, None, False) == (2, 0)  # a later generation: from 0
    assert resume_point(10, 1, 40, None, False) == (2, 0)  # shorter than committed
    assert resume_point(100, 1, 40, None, True) == (2, 0)  # truncation seen while running


def test_end_checksum_tells_whether_the_bytes_before_an_offset_are_still_there(
        tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"# header\n" + b"old line\n" * 40)
    fd = os.open(log, os.O_RDONLY)
    try:
        offset = 9 + 9 * 40
        crc = end_checksum(fd, offset)
        assert crc is not None and end_checksum(fd, 0) is not None
        with open(log, "ab") as f:
            f.write(b"more\n")
        assert has_end(fd, offset, crc)  # grown: the same file
        with open(log, "r+b") as f:  # same first line, regrown past the offset
            f.truncate(0)
            f.write(b"# header\n" + b"new line\n" * 80)
        assert not has_end(fd, offset, crc)
        with open(log, "r+b") as f:
            f.truncate(100)
        assert end_checksum(fd, offset) is None and not has_end(fd, offset, crc)
        assert has_end(fd, offset, None)  # nothing recorded: cannot tell
    finally:
        os.close(fd)

"""The local checkpoint: versioned plain data, atomic writes, expiry."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_agent.checkpoint import Checkpoint, dumps, loads


def test_round_trip_keeps_offsets_and_generations(tmp_path: Path) -> None:
    cp = Checkpoint()
    cp.record("n:1:2:abc", 120, "/var/log/a.log")
    cp.set_generation("n:1:2:abc", 2)
    path = tmp_path / "cp" / "checkpoints.json"
    cp.save(path)
    back = Checkpoint.load(path)
    assert back.get("n:1:2:abc") == 120
    assert back.generation("n:1:2:abc") == 2
    assert back.generation("unknown") == 0
    assert not path.with_suffix(".json.tmp").exists()


def test_version_1_checkpoints_load_without_generations() -> None:
    v1 = json.dumps({"version": 1, "files": {"f": {"offset": 5, "path": "/a", "updated": 1.0}}})
    cp = loads(v1.encode())
    assert cp.get("f") == 5 and cp.generations == {}


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError):
        loads(b'{"version": 99, "files": {}}')


def test_complete_temporary_file_is_preferred_after_a_crash_before_rename(
        tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    old, new = Checkpoint(), Checkpoint()
    old.record("f", 10, "/a")
    new.record("f", 20, "/a")
    path.write_bytes(dumps(old))
    path.with_suffix(".json.tmp").write_bytes(dumps(new))
    assert Checkpoint.load(path).get("f") == 20
    path.with_suffix(".json.tmp").write_bytes(b'{"version": 2, "fil')  # torn write
    assert Checkpoint.load(path).get("f") == 10


def test_entries_of_vanished_files_expire_after_the_grace_period() -> None:
    cp = Checkpoint()
    cp.record("gone", 1, "/a")
    cp.record("live", 2, "/b")
    cp.set_generation("gone-base", 1)
    cp.files["gone"].updated = cp.files["live"].updated = time.time() - 100
    cp.generations["gone-base"] = (1, time.time() - 100)
    assert cp.remove_expired({"live"}, set(), grace_s=1000) == ([], [])
    assert cp.remove_expired({"live"}, set(), grace_s=10) == (["gone"], ["gone-base"])
    assert cp.get("live") == 2 and cp.get("gone") is None


def test_checksum_before_each_offset_round_trips_and_older_versions_load_without_it() -> None:
    cp = Checkpoint()
    cp.record("f", 120, "/a", crc=0xDEADBEEF)
    cp.record("g", 5, "/b")
    back = loads(dumps(cp))
    f, g = back.entry("f"), back.entry("g")
    assert f is not None and f.offset == 120 and f.crc == 0xDEADBEEF
    assert g is not None and g.crc is None
    v2 = json.dumps({"version": 2, "files": {"f": {"offset": 5, "path": "/a", "updated": 1.0}},
                     "generations": {"b": {"generation": 1, "updated": 1.0}}})
    old = loads(v2.encode())
    entry = old.entry("f")
    assert entry is not None and entry.crc is None and old.generation("b") == 1

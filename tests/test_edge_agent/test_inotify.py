"""The inotify watcher: folder events arrive without polling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.inotify import IN_CREATE, IN_MODIFY, IN_MOVED_FROM, Watcher


@pytest.fixture
def watcher():
    w = Watcher.create()
    if w is None:
        pytest.skip("inotify is not available here")
    yield w
    w.close()


def test_watcher_reports_created_modified_and_renamed_files(tmp_path: Path, watcher) -> None:
    watcher.watch({str(tmp_path)})
    assert not watcher.wait(0.01)
    log = tmp_path / "a.log"
    log.write_bytes(b"x\n")
    assert watcher.wait(5.0)
    masks = {}
    for ev in watcher.read():
        masks[ev.path] = masks.get(ev.path, 0) | ev.mask
    assert masks[str(log)] & IN_CREATE and masks[str(log)] & IN_MODIFY
    os.rename(log, tmp_path / "a.log.1")
    assert watcher.wait(5.0)
    assert any(ev.mask & IN_MOVED_FROM and ev.name == "a.log" for ev in watcher.read())
    assert watcher.read() == []  # never blocks when nothing is queued


def test_deleted_folder_is_no_longer_watched(tmp_path: Path, watcher) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    watcher.watch({str(sub)})
    sub.rmdir()
    assert watcher.wait(5.0)
    watcher.read()
    assert watcher.folders == set()


def test_agent_notices_a_new_file_long_before_the_refresh_interval(
        tmp_path: Path, make_agent, tail) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    h = make_agent([tail(logs / "*.log", refresh_interval_s=60)]).start()
    from helpers import wait_for
    wait_for(lambda: h.agent.watcher is not None and h.agent.watcher.folders,
             message="folder watched")
    (logs / "new.log").write_bytes(b"hello\n")
    h.wait_lines(1, timeout=10)
    h.stop()


def test_writes_behind_a_symlink_are_seen_through_the_target_folder(
        tmp_path: Path, make_agent, tail) -> None:
    from helpers import wait_for
    containers, pods = tmp_path / "containers", tmp_path / "pods"
    containers.mkdir()
    pods.mkdir()
    h = make_agent([tail(containers / "*.log", refresh_interval_s=60)]).start()
    wait_for(lambda: h.agent.watcher is not None and h.agent.watcher.folders,
             message="folder watched")
    target = pods / "shop_web-1_uid" / "nginx" / "0.log"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"first\n")
    (containers / ("web-1_shop_nginx-" + "ab" * 32 + ".log")).symlink_to(target)
    h.wait_lines(1, timeout=10)
    inp = h.agent.inputs[0]
    wait_for(lambda: not inp.table.busy, message="file idle")
    for i in range(3):
        with open(target, "ab") as f:
            f.write(b"more %d\n" % i)
        h.wait_lines(2 + i, timeout=10)  # far sooner than refresh_interval_s
    assert str(target.parent) in h.agent.watcher.folders
    h.stop()

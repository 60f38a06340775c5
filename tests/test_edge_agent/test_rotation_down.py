"""Rotation while the agent is down: the lines written to the old file after the stop arrive once.

The real agent runs as a process on a real redis-server. It reads 3,000 lines and is stopped
(SIGTERM, or SIGKILL); the application writes 1,500 more, the file is rotated (rename + create,
or copytruncate), 500 lines go to the new file, and the agent starts again. The input's glob
matches only the live name, so without recovery the 1,500 lines are lost. Plain files rotate as
logrotate does (``app.log.1``); CRI files in the kubelet's layout (a ``/var/log/containers``
symlink to ``pods/.../0.log``, rotated to ``0.log.<timestamp>``).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from agent_harness import read_raw
from helpers import Role, wait_for, write_config
from redis_server import RedisServer

from edge_agent.checkpoint import Checkpoint, dumps, loads
from edge_agent.discovery import Discovery
from edge_agent.identity import (
    FileId,
    end_checksum,
    fingerprint,
    generation_of,
    head_checksum,
    identity_key,
    parse_base,
)
from edge_agent.options import TailOptions
from edge_agent.recovery import Recovery
from edge_agent.siblings import SiblingError, is_rotation_of, open_sibling, written_since
from edge_agent.tail import TailInput
from tailrace.keys import Keys

PARTITIONS = 4
CRI_TIME = b"2024-01-01T12:00:00.000000001Z"
CONTAINER_ID = "c0ffee" * 10 + "abcd"


class App:
    """The application: numbered lines into its log file, rotated as its platform does."""

    def __init__(self, root: Path, fmt: str) -> None:
        self.fmt = fmt
        self.written: list[bytes] = []
        if fmt == "cri":
            self.folder = root / "pods" / "shop_web-1_uid-1" / "nginx"
            self.folder.mkdir(parents=True)
            self.live = self.folder / "0.log"
            links = root / "containers"
            links.mkdir()
            (links / f"web-1_shop_nginx-{CONTAINER_ID}.log").symlink_to(self.live)
            self.glob = str(links / "*.log")
        else:
            self.folder = root
            root.mkdir(parents=True)
            self.live = root / "app.log"
            self.glob = str(root / "*.log")
        self.rotations = 0

    def write(self, n: int, path: Path | None = None) -> None:
        lines = [b"line-%06d %s" % (len(self.written) + i + 1, b"x" * (i % 50))
                 for i in range(n)]
        with open(path or self.live, "ab") as out:
            out.write(b"".join(self.encode(ln) for ln in lines))
        self.written.extend(lines)

    def encode(self, line: bytes) -> bytes:
        if self.fmt == "plain":
            return line + b"\n"
        return b"%s stdout F %s\n" % (CRI_TIME, line)

    def rotated_name(self) -> Path:
        """The next rotated name: kubelet's ``0.log.<timestamp>``, logrotate's ``.1``."""
        self.rotations += 1
        if self.fmt == "cri":
            return self.folder / f"0.log.20240101-12000{self.rotations}"
        return self.folder / "app.log.1"

    def rotate(self, how: str) -> Path:
        """Rotate the live file; returns where its content went."""
        target = self.rotated_name()
        if self.fmt == "plain" and target.exists():  # logrotate shifts .1 to .2 first
            os.rename(target, self.folder / "app.log.2")
        if how == "rename":
            os.rename(self.live, target)
            self.live.touch()  # logrotate's create (the kubelet's runtime opens it anew)
        else:
            shutil.copyfile(self.live, target)
            os.truncate(self.live, 0)
        return target


def agent_config(tmp: Path, prefix: str, glob: str, fmt: str, **opts: Any) -> Path:
    return write_config(tmp / "agent.yaml", {
        "service": {"data_dir": str(tmp / "data"), "partitions": PARTITIONS, "prefix": prefix,
                    "agent_id": "node-1", "publish_interval_s": 0.2},
        "pipeline": {"inputs": [{"name": "tail", "path": glob, "format": fmt,
                                 "read_from_head": True, "refresh_interval_s": 0.1,
                                 "batch_wait_ms": 20, "rotate_wait_s": 0.5, **opts}],
                     "outputs": [{"name": "stdout"}]},
    })


class Run:
    """One agent config on one Redis: start, wait, stop, and what reached the raw streams."""

    def __init__(self, tmp: Path, server: RedisServer, prefix: str, app: App,
                 **opts: Any) -> None:
        self.tmp, self.server, self.prefix, self.app = tmp, server, prefix, app
        self.config = agent_config(tmp, prefix, app.glob, app.fmt, **opts)
        self.client = server.client()
        self.agent: Role | None = None

    def start(self) -> Role:
        self.agent = Role("agent", self.config, self.server.url).start()
        return self.agent

    def lines(self) -> list[bytes]:
        return read_raw(self.client, self.prefix, PARTITIONS).lines

    def wait_lines(self, n: int) -> None:
        assert self.agent is not None
        agent = self.agent
        wait_for(lambda: len(self.lines()) >= n, timeout=60, interval=0.1,
                 message=f"{n} lines in the raw streams:\n{agent.output()[-3000:]}")

    def wait_checkpointed(self) -> None:
        """Until the local checkpoint names the live file (saved in the pass of its first
        commit): a kill before that is the documented limit."""
        path = self.tmp / "data" / "agent-node-1" / "checkpoints.json"

        def saved() -> bool:
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError):
                return False
            return bool(doc["files"])

        wait_for(saved, timeout=30, message="the checkpoint saved")

    def stop(self, signal: str) -> None:
        assert self.agent is not None
        if signal == "SIGKILL":
            self.agent.kill()
        else:
            assert self.agent.stop() == 0, self.agent.output()[-3000:]

    def counters(self) -> dict[str, int]:
        keys = list(self.client.scan_iter(match=Keys(self.prefix).worker_pattern()))
        records = [orjson.loads(v) for v in self.client.mget(keys) if v] if keys else []
        out: dict[str, int] = {}
        for rec in records:
            if rec["role"] == "agent" and rec["state"] != "stopped":
                for k, v in rec["counters"].items():
                    out[k] = out.get(k, 0) + v
        return out

    def settle_and_stop(self) -> None:
        """A late duplicate would show up within a second; then a clean stop."""
        assert self.agent is not None
        n = len(self.lines())
        wait_for(lambda: "lines_out" in self.counters(), timeout=10,
                 message="the agent's published counters")
        time.sleep(1.0)
        assert len(self.lines()) == n
        self.final_counters = self.counters()
        assert self.agent.stop() == 0, self.agent.output()[-3000:]


@pytest.fixture
def run(tmp_path: Path, fresh_redis: RedisServer, prefix: str) -> Iterator[Any]:
    made: list[Run] = []

    def make(app: App, **opts: Any) -> Run:
        r = Run(tmp_path, fresh_redis, prefix, app, **opts)
        made.append(r)
        return r

    yield make
    for r in made:
        if r.agent is not None:
            r.agent.kill()
        r.client.close()


def assert_exactly_once(shipped: list[bytes], written: list[bytes]) -> None:
    counts = Counter(shipped)
    dups = sorted(ln for ln, n in counts.items() if n > 1)
    assert not dups, f"{len(dups)} lines shipped twice, e.g. {dups[:2]}"
    missing = sorted(set(written) - set(counts))
    assert not missing, f"{len(missing)} of {len(written)} lines lost, e.g. {missing[:2]}"
    invented = sorted(set(counts) - set(written))
    assert not invented, f"lines never written were shipped: {invented[:2]}"
    assert len(shipped) == len(written)


def stop_rotate_restart(run: Any, app: App, how: str, signal: str) -> Run:
    """3,000 lines read; stop; 1,500 more; rotate; 500 into the new file; start again."""
    r: Run = run(app)
    app.write(3000)
    r.start()
    r.wait_lines(3000)
    r.wait_checkpointed()
    r.stop(signal)
    app.write(1500)
    app.rotate(how)
    app.write(500)
    r.start()
    return r


# Each case runs two agent processes (4-8 s): one case in the quick tier, all in the slow.
MATRIX = [
    pytest.param(how, signal, fmt, id=f"{how}-{signal}-{fmt}",
                 marks=() if (how, signal, fmt) == ("rename", "SIGKILL", "cri")
                 else pytest.mark.slow)
    for how in ("rename", "copytruncate") for signal in ("SIGTERM", "SIGKILL")
    for fmt in ("plain", "cri")
]


@pytest.mark.parametrize(("how", "signal", "fmt"), MATRIX)
def test_lines_written_before_a_rotation_while_down_arrive_once(
        tmp_path: Path, run: Any, how: str, signal: str, fmt: str) -> None:
    app = App(tmp_path / "logs", fmt)
    r = stop_rotate_restart(run, app, how, signal)
    r.wait_lines(5000)
    r.settle_and_stop()
    assert_exactly_once(r.lines(), app.written)
    assert r.final_counters.get("files_recovered") == 1
    assert "files_lost" not in r.final_counters
    shipped = read_raw(r.client, r.prefix, PARTITIONS)
    for identity, batches in shipped.by_file().items():  # in order, no gap, per file
        for prev, cur in zip(batches, batches[1:], strict=False):
            assert cur.start == prev.end, f"{identity}: gap or overlap at byte {cur.start}"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["rename", "copytruncate"])
def test_two_rotations_while_down_bring_the_old_file_and_the_one_between(
        tmp_path: Path, run: Any, how: str) -> None:
    app = App(tmp_path / "logs", "plain")
    r: Run = run(app)
    app.write(3000)
    r.start()
    r.wait_lines(3000)
    r.stop("SIGTERM")
    app.write(1000)
    app.rotate(how)  # app.log.1: the old file (or its copy)
    app.write(1000)
    app.rotate(how)  # app.log.2: the old file; app.log.1: the file the agent never saw
    app.write(500)
    assert sorted(p.name for p in app.folder.iterdir()) == ["app.log", "app.log.1", "app.log.2"]
    r.start()
    r.wait_lines(5500)
    r.settle_and_stop()
    assert_exactly_once(r.lines(), app.written)
    assert r.final_counters.get("files_recovered") == 2
    assert "files_lost" not in r.final_counters


@pytest.mark.slow
def test_a_rotated_file_deleted_while_down_is_reported_lost_and_nothing_else_is_read(
        tmp_path: Path, run: Any) -> None:
    app = App(tmp_path / "logs", "plain")
    old = app.folder / "app.log.3"  # an old rotation the agent never followed
    old.write_bytes(b"from last year\n")
    os.utime(old, (1_600_000_000, 1_600_000_000))
    r: Run = run(app)
    app.write(3000)
    r.start()
    r.wait_lines(3000)
    r.stop("SIGKILL")
    app.write(1500)
    lost = app.written[3000:]
    gone = app.rotate("rename")
    gone.unlink()  # logrotate's `rotate 0`, or an operator
    (app.folder / "other.log.1").write_bytes(b"line-999999 another application\n")
    app.write(500)
    r.start()
    r.wait_lines(3500)
    r.settle_and_stop()
    assert_exactly_once(r.lines(), [ln for ln in app.written if ln not in set(lost)])
    assert r.final_counters.get("files_lost") == 1
    assert "files_recovered" not in r.final_counters
    out = r.agent.output() if r.agent else ""
    assert "tail_file_lost" in out and str(app.live) in out and "after byte" in out


@pytest.mark.parametrize("fmt", ["plain", pytest.param("cri", marks=pytest.mark.slow)])
def test_a_rotated_file_compressed_while_down_is_read_through_gzip(
        tmp_path: Path, run: Any, fmt: str) -> None:
    app = App(tmp_path / "logs", fmt)
    # Plain: the rotated names are followed too, the compressed ones excluded: recovery reads
    # the .gz anyway (it holds the rest of a followed file), and nothing twice. CRI: the
    # kubelet's 0.log.<timestamp>.gz.
    opts = ({"path": str(app.folder / "app.log*"), "exclude_path": ["*.gz"]}
            if fmt == "plain" else {})
    r: Run = run(app, **opts)
    app.write(3000)
    r.start()
    r.wait_lines(3000)
    r.stop("SIGTERM")
    app.write(1500)
    rotated = app.rotate("rename")
    with open(rotated, "rb") as src, gzip.open(f"{rotated}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)  # logrotate's compress (no delaycompress)
    rotated.unlink()
    app.write(500)
    r.start()
    r.wait_lines(5000)
    r.settle_and_stop()
    assert_exactly_once(r.lines(), app.written)
    assert r.final_counters.get("files_recovered") == 1
    assert not list((tmp_path / "data" / "agent-node-1").glob("gunzip-*"))  # scratch gone


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["plain", "cri"])
def test_an_old_rotation_compressed_while_down_is_not_read(
        tmp_path: Path, run: Any, fmt: str) -> None:
    """delaycompress: the previous rotation becomes a new .gz while the agent is down. GNU
    gzip keeps its source's time in the header; the kubelet's (Go) keeps none, but the CRI
    lines keep theirs."""
    app = App(tmp_path / "logs", fmt)
    old_time = 1_577_836_800  # 2020
    old = app.folder / ("app.log.1" if fmt == "plain" else "0.log.20200101-000000")
    old_line = (b"an old line" if fmt == "plain"
                else b"2020-01-01T00:00:00.000000001Z stdout F an old line")
    old.write_bytes(old_line + b"\n")
    os.utime(old, (old_time, old_time))
    r: Run = run(app)
    app.write(3000)
    r.start()
    r.wait_lines(3000)
    r.stop("SIGTERM")
    app.write(1500)
    if fmt == "plain":  # logrotate: .1 -> .2.gz (delaycompress), app.log -> .1
        with open(old, "rb") as src, open(app.folder / "app.log.2.gz", "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=old_time) as dst:
            shutil.copyfileobj(src, dst)
        old.unlink()
    else:  # the kubelet compresses the older rotation, without a time in the header
        with open(old, "rb") as src, open(f"{old}.gz", "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
        old.unlink()
    app.rotate("rename")
    app.write(500)
    r.start()
    r.wait_lines(5000)
    r.settle_and_stop()
    assert_exactly_once(r.lines(), app.written)
    assert r.final_counters.get("files_recovered") == 1


@pytest.mark.slow
def test_a_damaged_gz_is_reported_and_never_read_as_lines(tmp_path: Path, run: Any) -> None:
    app = App(tmp_path / "logs", "plain")
    r: Run = run(app)
    app.write(3000)
    r.start()
    r.wait_lines(3000)
    r.stop("SIGTERM")
    app.write(1500)
    lost = set(app.written[3000:])
    rotated = app.rotate("rename")
    data = gzip.compress(rotated.read_bytes())
    Path(f"{rotated}.gz").write_bytes(data[: len(data) // 2])  # compression cut short
    rotated.unlink()
    app.write(500)
    r.start()
    r.wait_lines(3500)
    r.settle_and_stop()
    assert_exactly_once(r.lines(), [ln for ln in app.written if ln not in lost])
    assert r.final_counters.get("files_lost") == 1
    out = r.agent.output() if r.agent else ""
    assert "app.log.1.gz cannot be read through gzip" in out


@pytest.mark.slow
def test_copytruncate_with_rotated_names_followed_reads_the_copy_from_the_offset(
        tmp_path: Path, run: Any) -> None:
    """Today's glob advice (``app.log*``) made the copy a new file, read again from byte 0."""
    app = App(tmp_path / "logs", "plain")
    r: Run = run(app, path=str(app.folder / "app.log*"))
    app.write(3000)
    r.start()
    r.wait_lines(3000)
    r.stop("SIGKILL")
    app.write(1500)
    app.rotate("copytruncate")
    app.write(500)
    r.start()
    r.wait_lines(5000)
    r.settle_and_stop()
    assert_exactly_once(r.lines(), app.written)
    r.start()  # and the next start still knows the copy by its content
    app.write(100)
    r.wait_lines(5100)
    r.settle_and_stop()
    assert_exactly_once(r.lines(), app.written)


@pytest.mark.slow
def test_a_rotated_file_drained_before_the_stop_and_deleted_meanwhile_is_not_reported(
        tmp_path: Path, run: Any) -> None:
    app = App(tmp_path / "logs", "plain")
    r: Run = run(app)
    app.write(1000)
    r.start()
    r.wait_lines(1000)
    rotated = app.rotate("rename")  # while the agent runs: drained, then closed
    app.write(500)
    r.wait_lines(1500)
    time.sleep(1.5)  # rotate_wait_s (0.5 s) has passed: app.log.1 is closed
    r.stop("SIGTERM")
    rotated.unlink()
    app.write(100)
    r.start()
    r.wait_lines(1600)
    r.settle_and_stop()
    assert_exactly_once(r.lines(), app.written)
    assert "files_lost" not in r.final_counters
    assert "files_recovered" not in r.final_counters


@pytest.mark.slow
@pytest.mark.parametrize("signal", ["SIGTERM", "SIGKILL"])
def test_copytruncate_keeping_the_first_line_finishes_the_copy_and_restarts_the_original(
        tmp_path: Path, run: Any, signal: str) -> None:
    """The same first line (a header) after the truncation: one base identity, two files."""
    app = App(tmp_path / "logs", "plain")
    header = b"=== app started ==="
    r: Run = run(app)
    app.live.write_bytes(header + b"\n")
    app.written.append(header)
    app.write(3000)
    r.start()
    r.wait_lines(3001)
    r.wait_checkpointed()
    r.stop(signal)
    app.write(1500)
    app.rotate("copytruncate")
    with open(app.live, "ab") as out:
        out.write(header + b"\n")
    app.written.append(header)
    app.write(500)
    r.start()
    r.wait_lines(5002)
    r.settle_and_stop()
    assert Counter(r.lines()) == Counter(app.written)
    assert r.final_counters.get("files_recovered") == 1
    r.start()  # and once more: nothing again
    app.write(10)
    r.wait_lines(5012)
    r.settle_and_stop()
    assert Counter(r.lines()) == Counter(app.written)


# -- the pieces ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "original", "rotated"), [
    ("app.log.1", "app.log", True),
    ("app.log.1.gz", "app.log", True),
    ("app.log-20240101", "app.log", True),
    ("0.log.20240101-120000", "0.log", True),
    ("0.log.20240101-120000.gz", "0.log", True),
    ("app.log", "app.log", False),
    ("app.log.", "app.log", False),
    ("app.logger", "app.log", False),
    ("other.log.1", "app.log", False),
])
def test_rotated_names_are_those_logrotate_and_the_kubelet_give(
        name: str, original: str, rotated: bool) -> None:
    assert is_rotation_of(name, original) is rotated


def test_the_checkpoint_keeps_the_own_path_of_a_symlinked_file() -> None:
    cp = Checkpoint()
    assert cp.record("a:1:2:3", 10, "/var/log/containers/x.log", 7, "/var/log/pods/p/c/0.log")
    assert not cp.record("a:1:2:3", 20, "/var/log/containers/x.log", 8,
                         "/var/log/pods/p/c/0.log")
    cp.record("a:1:4:3", 5, "/logs/app.log", None, "/logs/app.log")  # not a link
    back = loads(dumps(cp))
    assert back.files["a:1:2:3"].real == "/var/log/pods/p/c/0.log"
    assert back.files["a:1:2:3"].offset == 20
    assert back.files["a:1:4:3"].real is None
    v3 = json.dumps({"version": 3, "files": {"f": {"offset": 5, "path": "/a", "updated": 1.0,
                                                    "crc": 9}}})
    assert loads(v3.encode()).files["f"].real is None


def test_identities_parse_back_whatever_the_agent_id() -> None:
    base = FileId(0x803, 0x1A2B, 0x9F0C11AA).key("node:with:colons")
    assert parse_base(base) == FileId(0x803, 0x1A2B, 0x9F0C11AA)
    assert parse_base("garbage") is None
    assert generation_of(identity_key(base, 3)) == 3
    assert generation_of(base) == 0
    assert head_checksum(b"first\nsecond") == head_checksum(b"first\nother")
    assert head_checksum(b"no newline yet") is None


def test_an_input_says_which_paths_it_follows(tmp_path: Path) -> None:
    opts = TailOptions.model_validate({"name": "tail", "path": [str(tmp_path / "*.log")],
                                       "exclude_path": ["debug*"]})
    d = Discovery(opts, base_dir=tmp_path, host="h", input_id="tail.0", plugin_name="tail")
    assert d.follows(str(tmp_path / "app.log"))  # whether or not it exists
    assert not d.follows(str(tmp_path / "app.log.1"))
    assert not d.follows(str(tmp_path / "sub" / "app.log"))  # * never crosses a /
    assert not d.follows(str(tmp_path / "debug.log"))


def _followed_then_rotated(folder: Path, n: int, how: str) -> Checkpoint:
    """n files read to their end at the last save, then rotated; the new ones hold a line."""
    cp = Checkpoint()
    for i in range(n):
        path = folder / f"app{i}.log"
        path.write_bytes(b"".join(b"file %d line %d\n" % (i, j) for j in range(100)))
        fd = os.open(path, os.O_RDONLY)
        st = os.fstat(fd)
        fid = fingerprint(fd, st)
        assert fid is not None
        cp.record(fid.key("a"), st.st_size, str(path), end_checksum(fd, st.st_size))
        os.close(fd)
    saved = time.time() - 10
    for fc in cp.files.values():
        fc.updated = saved
    for i in range(n):
        path = folder / f"app{i}.log"
        if how == "rename":
            os.rename(path, f"{path}.1")
        else:
            shutil.copyfile(path, f"{path}.1")
            os.truncate(path, 0)
        path.write_bytes(b"new %d\n" % i)
    return cp


def _tail(folder: Path, pattern: str = "*.log") -> TailInput:
    opts = TailOptions.model_validate({"name": "tail", "path": [str(folder / pattern)]})
    return TailInput(opts, agent="a", input_id="tail.0", partitions=8, base_dir=folder,
                     counters=lambda _k, _n: None)


@pytest.mark.parametrize("how", ["rename", "copytruncate"])
def test_every_rotated_file_of_a_folder_is_found_and_nothing_unrelated(
        tmp_path: Path, how: str) -> None:
    cp = _followed_then_rotated(tmp_path, 50, how)
    unrelated = {"app0.log.old": b"file 0 line 0\nbut another file\n",  # same first line
                 "app0.logger": b"fresh\n", "other.log.1": b"fresh\n",
                 "app1.log.2": b"an old rotation\n"}
    for name, data in unrelated.items():
        (tmp_path / name).write_bytes(data)
    os.utime(tmp_path / "app1.log.2", (1_600_000_000, 1_600_000_000))
    os.utime(tmp_path / "app0.log.old", (1_600_000_000, 1_600_000_000))
    inp = _tail(tmp_path)
    inp.table.scan(time.monotonic())
    Recovery(cp, "a", tmp_path / "scratch").run([inp], time.monotonic())
    recovered = [tf for tf in inp.table.waiting_files() if tf.rotated_at is not None]
    assert sorted(os.path.basename(tf.real) for tf in recovered) == sorted(
        f"app{i}.log.1" for i in range(50))
    for tf in recovered:  # each finishes the identity checkpointed for its original path
        assert tf.ident.pinned == 0 and cp.files[tf.ident.base].path == tf.path
        assert tf.ident.adopted is (how == "copytruncate")
    inp.close()


def test_a_sibling_is_read_as_it_is_or_through_gzip_and_never_leaks_a_descriptor(
        tmp_path: Path) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    plain = tmp_path / "app.log.1"
    plain.write_bytes(b"first\nsecond\n")
    good = tmp_path / "app.log.2.gz"
    good.write_bytes(gzip.compress(b"first\nsecond\n", mtime=1_600_000_000))
    cut = tmp_path / "app.log.3.gz"
    whole = gzip.compress(b"first\n" + b"".join(b"%d\n" % (i * 7919 % 10007) for i in range(9000)))
    cut.write_bytes(whole[: len(whole) // 2])  # compression cut short
    xz = tmp_path / "app.log.4.xz"
    xz.write_bytes(b"\xfd7zXZ\x00 not gzip")
    scratch = tmp_path / "scratch"
    a = open_sibling(str(plain), plain.stat(), scratch, lambda _crc: True)
    b = open_sibling(str(good), good.stat(), scratch, lambda _crc: True)
    assert a is not None and b is not None
    assert not a.gz and b.gz and a.fid.crc == b.fid.crc and b.size == 13
    assert b.mtime == 1_600_000_000  # the source's time, from the gzip header
    assert not written_since(b, "plain", time.time() - 60)
    assert written_since(a, "plain", time.time() - 60)
    assert os.pread(b.fd, 100, 0) == b"first\nsecond\n"
    assert not list(scratch.iterdir())  # the scratch copy is unlinked at once
    os.close(a.fd)
    os.close(b.fd)
    assert open_sibling(str(good), good.stat(), scratch, lambda _crc: False) is None
    with pytest.raises(SiblingError, match="cannot be read through gzip"):
        open_sibling(str(cut), cut.stat(), scratch, lambda _crc: True)
    with pytest.raises(SiblingError, match="another tool than gzip"):
        open_sibling(str(xz), xz.stat(), scratch, lambda _crc: True)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_a_container_log_counts_as_new_by_the_time_of_its_first_line(tmp_path: Path) -> None:
    old = tmp_path / "0.log.20200101-000000.gz"  # the kubelet's gzip keeps no time
    old.write_bytes(gzip.compress(b"2020-01-01T00:00:00.000000001Z stdout F old\n", mtime=0))
    new = tmp_path / "0.log.20240101-120000"
    new.write_bytes(b"%s stdout F new\n" % time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                         time.gmtime()).encode())
    since = time.time() - 60
    for path, expected in ((old, False), (new, True)):
        sib = open_sibling(str(path), path.stat(), tmp_path / "scratch", lambda _crc: True)
        assert sib is not None
        assert written_since(sib, "cri", since) is expected
        os.close(sib.fd)

"""Backfill: whole files (plain or gzip) through the idempotent producer, exactly once."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from helpers import Role, count_lines, load_test_config, read_json_lines, wait_for
from test_e2e import assert_exactly_once, pipeline_config

from edge_agent.backfill import backfill_file
from tailrace.broker import ensure_groups
from tailrace.cli import cli
from tailrace.generate import Generator
from tailrace.keys import Keys
from tailrace.wire import decode_raw


def _lines(tmp: Path, n: int, name: str = "old.log") -> Path:
    gen = Generator(tmp / "gen", files=1, fmt="plain", rate=0, total=n)
    gen.run(chunk=5000)
    gen.close()
    src = next((tmp / "gen").glob("*.log"))
    dst = tmp / name
    src.rename(dst)
    return dst


def _gzip(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return gz


def _raw_lines(r: redis.Redis, keys: Keys, partitions: int) -> list[bytes]:
    out: list[bytes] = []
    for p in range(partitions):
        for _id, fields in r.xrange(keys.raw(p)):
            out += decode_raw(fields).lines
    return out


def test_backfilling_a_gzip_file_twice_commits_each_line_once(
        tmp_path: Path, r: redis.Redis, prefix: str) -> None:
    cfg = load_test_config("pipeline:\n  inputs: [{name: tail, path: /none, tag: old}]\n")
    keys = Keys(prefix)
    ensure_groups(r, keys, 4, [])
    gz = _gzip(_lines(tmp_path, 20_000))
    seen = []
    kw = dict(agent="node-1", input_id="tail.0", partitions=4, base_dir=tmp_path)
    first = backfill_file(r, keys, cfg.inputs[0].options, path=gz,
                          progress=lambda d, t: seen.append((d, t)), **kw)  # type: ignore[arg-type]
    assert first.lines == 20_000 and first.skipped_batches == 0
    assert seen[-1][0] == seen[-1][1] == gz.stat().st_size
    again = backfill_file(r, keys, cfg.inputs[0].options, path=gz, **kw)  # type: ignore[arg-type]
    assert again.lines == 0 and again.start_offset == first.end_offset
    lines = _raw_lines(r, keys, 4)
    assert len(lines) == 20_000 and len(set(lines)) == 20_000
    assert lines == gzip.decompress(gz.read_bytes()).splitlines()


def test_an_interrupted_backfill_resumes_at_the_committed_offset(
        tmp_path: Path, r: redis.Redis, prefix: str) -> None:
    cfg = load_test_config("pipeline:\n  inputs: [{name: tail, path: /none, batch_bytes: 64k}]\n")
    keys = Keys(prefix)
    path = _lines(tmp_path, 5_000)
    data = path.read_bytes()
    kw = dict(agent="node-1", input_id="tail.0", partitions=2, base_dir=tmp_path)

    class Stop(Exception):
        pass

    def stop_after_two(done: int, total: int, calls: list[int] = []) -> None:  # noqa: B006
        calls.append(done)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        backfill_file(r, keys, cfg.inputs[0].options, path=path, progress=stop_after_two, **kw)  # type: ignore[arg-type]
    partial = len(_raw_lines(r, keys, 2))
    assert 0 < partial < 5_000
    rest = backfill_file(r, keys, cfg.inputs[0].options, path=path, **kw)  # type: ignore[arg-type]
    assert rest.start_offset > 0 and rest.lines == 5_000 - partial
    assert _raw_lines(r, keys, 2) == data.splitlines()


def test_a_last_line_without_newline_is_backfilled(tmp_path: Path, r: redis.Redis,
                                                   prefix: str) -> None:
    cfg = load_test_config("pipeline:\n  inputs: [{name: tail, path: /none}]\n")
    keys = Keys(prefix)
    path = tmp_path / "x.log"
    path.write_bytes(b"first\nsecond\nlast without newline")
    res = backfill_file(r, keys, cfg.inputs[0].options, path=path, agent="a", input_id="tail.0",
                        partitions=1, base_dir=tmp_path)
    assert res.lines == 3
    assert _raw_lines(r, keys, 1) == [b"first", b"second", b"last without newline"]


@pytest.mark.slow
def test_backfill_command_twice_yields_each_record_once(tmp_path: Path, redis_url: str,
                                                        prefix: str) -> None:
    total = 100_000
    gz = _gzip(_lines(tmp_path, total))
    cfg = pipeline_config(tmp_path, prefix)
    out = tmp_path / "out" / "all.log"
    roles = [Role("processor", cfg, redis_url).start(), Role("sink", cfg, redis_url).start()]
    try:
        for attempt in (1, 2):
            result = CliRunner().invoke(cli, ["backfill", "-c", str(cfg), "--broker", redis_url,
                                              str(gz)])
            assert result.exit_code == 0, result.output
            committed = ("100,000 lines of" if attempt == 1
                         else "all 100,000 lines of")
            assert committed in " ".join(result.stderr.split()), result.stderr
        wait_for(lambda: count_lines(out) >= total, timeout=120, message="every record")
    finally:
        codes = [role.stop() for role in roles]
    assert codes == [0, 0]
    assert_exactly_once(read_json_lines(out), total)

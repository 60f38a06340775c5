"""`tailrace backfill` says what happened, also when everything was already there."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_config

from tailrace.cli import cli


def _run(cfg: Path, redis_url: str, path: Path) -> str:
    result = CliRunner().invoke(cli, ["backfill", "-c", str(cfg), "--broker", redis_url,
                                      str(path)])
    assert result.exit_code == 0, result.output
    return " ".join(result.stderr.split())


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_a_second_backfill_says_every_line_was_already_there(
        tmp_path: Path, redis_url: str, prefix: str, gz: bool) -> None:
    cfg = write_config(tmp_path / "p.yaml", {
        "service": {"prefix": prefix, "partitions": 2, "data_dir": str(tmp_path / "data")},
        "pipeline": {"inputs": [{"name": "tail", "path": str(tmp_path / "*.log")}],
                     "outputs": [{"name": "stdout"}]}})
    text = "".join(f"line {i} of the old file\n" for i in range(500)).encode()
    path = tmp_path / ("old.log.gz" if gz else "old.log")
    path.write_bytes(gzip.compress(text) if gz else text)
    first = _run(cfg, redis_url, path)
    assert f"500 lines of {path} committed in" in first, first
    second = _run(cfg, redis_url, path)
    assert f"all 500 lines of {path} were already in the pipeline" in second, second
    assert "0 lines committed" not in second
    # The progress bar shows the file's size, done: not "1/1 bytes".
    size = path.stat().st_size
    assert not re.search(r"\b1/1 bytes", second), second
    shown = f"{size}/{size} bytes" if size < 1000 else f"{size / 1000:.1f}/{size / 1000:.1f} kB"
    assert shown in second, (shown, second)


def test_a_backfill_of_a_grown_file_commits_the_new_lines_and_counts_the_old(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    cfg = write_config(tmp_path / "p.yaml", {
        "service": {"prefix": prefix, "partitions": 2, "data_dir": str(tmp_path / "data")},
        "pipeline": {"inputs": [{"name": "tail", "path": str(tmp_path / "*.log")}],
                     "outputs": [{"name": "stdout"}]}})
    path = tmp_path / "grows.log"
    path.write_text("".join(f"old {i}\n" for i in range(300)))
    _run(cfg, redis_url, path)
    with path.open("a") as f:
        f.write("".join(f"new {i}\n" for i in range(20)))
    again = _run(cfg, redis_url, path)
    assert f"20 lines of {path} committed in 1 batch (partition" in again, again
    assert "300 lines before them were already in the pipeline" in again, again

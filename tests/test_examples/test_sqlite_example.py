"""The example plugin package end to end: installed for real, run from its README's config.

Plugin authors copy ``examples/tailrace-example``: its README's pipeline must deliver every
line exactly once into SQLite (the sink builds the output in one thread and writes from
another), create the database's folder, and name the plugin in its dead letters.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from helpers import EXAMPLE, ROOT, Role, install_example, wait_for, write_config

from tailrace.keys import Keys


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example package installed (a real pip build) into a folder of its own."""
    target = install_example(tmp_path_factory.mktemp("example"))
    yield target


def readme_pipeline() -> dict[str, object]:
    """The YAML block of the example's README, as a user copies it."""
    text = (EXAMPLE / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block, "the README shows a pipeline"
    doc = yaml.safe_load(block.group(1))
    assert doc["pipeline"]["outputs"][0]["path"] == "./out/logs.db"
    return doc  # type: ignore[no-any-return]


def example_run(tmp_path: Path, site: Path, redis_url: str, prefix: str,
                doc: dict[str, object]) -> Role:
    role = Role("run", write_config(tmp_path / "pipeline.yaml", doc), redis_url)
    role.env["PYTHONPATH"] = f"{site}:{ROOT}"
    return role


def test_the_readme_pipeline_delivers_every_line_once_into_sqlite(
        tmp_path: Path, site: Path, redis_url: str, prefix: str) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "orders.log").write_text("".join(
        f"{i},user{i}@example.com,{i}.5\n" for i in range(801)))
    doc = readme_pipeline()
    doc["service"] = {"data_dir": str(tmp_path / "data"), "partitions": 2, "prefix": prefix,
                      "heartbeat_ms": 300, "publish_interval_s": 1}
    doc["pipeline"]["inputs"] = [{"name": "tail", "tag": "orders",  # type: ignore[index]
                                  "path": str(logs / "*.log"), "read_from_head": True,
                                  "refresh_interval_s": 0.2}]
    assert not (tmp_path / "out").exists()  # the README's folder is created by the output
    db_path = tmp_path / "out" / "logs.db"

    def rows() -> int:
        if not db_path.exists():
            return 0
        with sqlite3.connect(db_path) as db:
            try:
                return int(db.execute("SELECT count(*) FROM logs").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    run = example_run(tmp_path, site, redis_url, prefix, doc).start()
    try:
        wait_for(lambda: rows() >= 801 or not run.alive, timeout=90, message="801 rows")
    finally:
        code = run.stop()
    output = run.output()
    assert code == 0, output[-3000:]
    assert rows() == 801, output[-3000:]
    assert "Traceback" not in output and "same thread" not in output, output[-3000:]
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(DISTINCT id) FROM logs").fetchone() == (801,)
        record = db.execute("SELECT record FROM logs WHERE record LIKE '%\"id\": \"7\"%'"
                            ).fetchone()[0]
    assert '"email": "[redacted]"' in record and '"amount": 7.5' in record
    r = redis.Redis.from_url(redis_url)
    try:
        assert sum(r.xlen(Keys(prefix).dlq(p)) for p in range(2)) == 0
    finally:
        r.close()


def test_a_missing_folder_without_mkdir_is_one_clear_message(
        tmp_path: Path, site: Path, redis_url: str, prefix: str) -> None:
    doc = {"service": {"data_dir": str(tmp_path / "data"), "partitions": 1, "prefix": prefix},
           "pipeline": {"outputs": [{"name": "sqlite", "path": "./nowhere/logs.db",
                                     "mkdir": False}]}}
    cfg = write_config(tmp_path / "pipeline.yaml", doc)
    proc = subprocess.run([sys.executable, "-m", "tailrace", "sink", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin",
                               "TAILRACE_BROKER": redis_url})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"folder '{tmp_path / 'nowhere'}'" in proc.stderr and "mkdir: true" in proc.stderr

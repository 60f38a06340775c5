"""Plugin registration: the built-in lists, and a third-party package through entry points."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, install_example
from pconf import batch

from processors.chain import Chain
from processors.plugins import FILTERS, PARSERS
from tailrace.config import parse_config
from tailrace.plugins import Registry


def test_every_builtin_the_issue_names_is_registered() -> None:
    reg = Registry()
    reg.add_builtin("filters", FILTERS)
    reg.add_builtin("parsers", PARSERS)
    assert set(reg.filters) == {
        "parser", "grep", "modify", "record_modifier", "nest", "rewrite_tag", "throttle",
        "kubernetes", "python"}
    assert set(reg.parsers) == {"regex", "json", "logfmt", "ltsv"}
    for cls in (*reg.filters.values(), *reg.parsers.values()):  # imports each: names match
        assert cls.description
        undocumented = [n for n, f in cls.Options.model_fields.items() if not f.description]
        assert not undocumented, f"{cls.name}: options without a description: {undocumented}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example package installed (a real pip build) into a folder of its own."""
    target = install_example(tmp_path_factory.mktemp("plugin"))
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("tailrace_example")]:
        del sys.modules[name]


CONFIG = {
    "parsers": [{"name": "orders", "format": "csv", "columns": ["id", "email", "amount"],
                 "types": {"amount": "float"}}],
    "pipeline": {
        "filters": [{"name": "parser", "key": "log", "parser": "orders"},
                    {"name": "redact", "keys": ["email"]}],
        "outputs": [{"name": "sqlite", "alias": "db", "match": "*", "path": "out.db"}],
    },
}


def test_third_party_filter_parser_and_output_load_from_entry_points(
        installed: Path, tmp_path: Path) -> None:
    reg = Registry()
    reg.add_builtin("filters", FILTERS)
    reg.add_builtin("parsers", PARSERS)
    reg.load_entry_points()
    assert "redact" in reg.filters and "csv" in reg.parsers and "sqlite" in reg.outputs
    config = parse_config(yaml.safe_dump(CONFIG), str(tmp_path / "p.yaml"), reg)
    res = Chain(config).run(batch(["7,ann@example.com,12.5", "not,csv"]))
    assert {k: res.records[0][k] for k in ("id", "email", "amount")} == {
        "id": "7", "email": "[redacted]", "amount": 12.5}
    assert res.counters["unmatched"] == 1

    out = config.output("db")

    class Ctx:
        @staticmethod
        def resolve_path(p: str) -> Path:
            return config.resolve_path(p)

    sink = out.plugin(out.options, Ctx())
    for _ in range(2):  # a redelivered batch writes nothing twice
        sink.write_batch(res.records)
    sink.close()
    import sqlite3

    db = sqlite3.connect(tmp_path / "out.db")
    assert db.execute("SELECT count(*) FROM logs").fetchone() == (2,)


def test_the_cli_sees_third_party_plugins(installed: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    env = {"PYTHONPATH": f"{installed}:{ROOT}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "tailrace", "config", "check", "-c", str(cfg)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "name: redact" in proc.stdout and "name: sqlite" in proc.stdout
    bad = dict(CONFIG, parsers=[{"name": "orders", "format": "csv"}])
    cfg.write_text(yaml.safe_dump(bad))
    proc = subprocess.run([sys.executable, "-m", "tailrace", "config", "check", "-c", str(cfg)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 2 and "parsers[0]" in proc.stderr and "columns" in proc.stderr

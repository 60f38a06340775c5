"""What the edge agent package exports and imports (it runs on every node: keep it lean)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edge_agent

ROOT = Path(__file__).resolve().parents[2]
# The agent's own imports: the core, the standard library and these (the core needs them).
ALLOWED = {"tailrace", "redis", "msgpack", "yaml", "pydantic", "orjson"}
NEVER_LOADED = ("processors", "sinks", "rq", "rich", "urllib3", "prometheus_client", "click")


def test_public_names_are_exported() -> None:
    assert sorted(edge_agent.__all__) == sorted(
        ["INPUTS", "Agent", "MultilineOptions", "Selector", "TailInput", "TailOptions"])
    for name in edge_agent.__all__:
        assert getattr(edge_agent, name) is not None
    assert edge_agent.INPUTS == [edge_agent.TailInput]


def test_agent_modules_import_only_the_core_stdlib_and_allowed_libraries() -> None:
    bad = []
    for path in sorted((ROOT / "edge_agent").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ALLOWED | {"__future__"}:
                    bad.append(f"{path.name}: {name}")
    assert not bad, bad


def test_importing_the_agent_loads_no_other_role_or_heavy_library() -> None:
    code = ("import sys, edge_agent; "
            f"print(','.join(m for m in {NEVER_LOADED!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == ""

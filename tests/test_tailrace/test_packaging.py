"""Package boundaries: public names through __all__, and who may import whom."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["tailrace", "tailrace.consumer", "edge_agent", "processors", "sinks"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_exists_and_is_public(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ lists missing {attr!r}"
        assert not attr.startswith("_") or attr == "__version__"


def _imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return {m.split(".")[0] for m in out.split()}


def test_the_core_imports_no_role_package() -> None:
    mods = _imported_after("import tailrace, tailrace.consumer, tailrace.runtime, "
                           "tailrace.consumer.lease, tailrace.supervise, tailrace.generate")
    assert not mods & {"edge_agent", "processors", "sinks"}


def test_the_agent_imports_only_the_core_and_its_allowed_libraries() -> None:
    mods = _imported_after("import edge_agent")
    assert not mods & {"processors", "sinks", "rq", "rich", "prometheus_client", "urllib3",
                       "click"}, mods & {"processors", "sinks", "rq", "rich", "click"}


@pytest.mark.parametrize("role, others", [
    ("processors", {"edge_agent", "sinks"}),
    ("sinks", {"edge_agent", "processors"}),
])
def test_roles_do_not_import_each_other(role: str, others: set[str]) -> None:
    assert not _imported_after(f"import {role}") & others

"""Plain helpers of the agent tests (importable by name, unlike ``conftest``).

``from conftest import ...`` is ambiguous under ``--import-mode=importlib``: in the whole
suite it can find another folder's conftest (tests/test_cluster has one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tail_input(path: Path | str, **opts: Any) -> dict[str, Any]:
    """A ``tail`` input that reads from the head and notices changes quickly."""
    return {"name": "tail", "path": str(path), "read_from_head": True,
            "refresh_interval_s": 0.1, "batch_wait_ms": 20, **opts}

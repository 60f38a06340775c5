"""Helpers shared by the multi-node tests: status, logs, per-node command counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from helpers import Role
from redis_cluster import ClusterUnderTest

__all__ = ["status_json", "stop_all", "warnings_of", "xreadgroup_calls"]


def status_json(cfg: Path, url: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "tailrace", "status", "-c", str(cfg),
                          "--broker", url, "--json"], capture_output=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    doc: dict[str, Any] = orjson.loads(out.stdout)
    return doc


def xreadgroup_calls(cluster: ClusterUnderTest) -> int:
    total = 0
    for s in cluster.master_servers():
        c = s.client()
        try:
            total += int(c.info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0))
        finally:
            c.close()
    return total


def warnings_of(roles: list[Role], last: int = 12) -> str:
    """The last warnings and errors each role logged, for a failure message."""
    out = []
    for r in roles:
        lines = [ln for ln in r.output().splitlines()
                 if " WARNING " in ln or " ERROR " in ln or "Error" in ln]
        out.append(f"--- {r.role} ({len(lines)} warnings)\n" + "\n".join(lines[-last:]))
    return "\n".join(out)


def stop_all(roles: list[Role]) -> dict[str, int]:
    return {f"{r.role}-{i}": r.stop() for i, r in enumerate(roles) if r.alive}

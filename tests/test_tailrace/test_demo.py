"""``tailrace demo``, the README's first command, end to end in a real subprocess."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import orjson
import redis

from tailrace.cli.demo import _await_agent
from tailrace.keys import Keys


def test_demo_delivers_every_line_once_across_rotations(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tailrace", "demo", "--dir", str(tmp_path / "demo"),
         "--lines", "30000", "--rate", "15000", "--rotate-bytes", "262144", "--timeout", "60"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert "every line arrived exactly once" in said
    assert "0 duplicates" in said and " 0 rotations" not in said


def test_the_generator_waits_for_the_agents_first_pass(r: redis.Redis, prefix: str) -> None:
    # Lines written to a file that rotates away before the agent's first scan are past the
    # glob: the demo must not start writing while the agent is still starting or mid-pass.
    keys = Keys(prefix)
    key = keys.worker_pattern().replace("*", "agent-1")
    stop = threading.Event()
    done = threading.Event()

    def wait() -> None:
        _await_agent(r, keys, stop, 10.0)
        done.set()

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    for state in ("starting", "active"):
        r.set(key, orjson.dumps({"role": "agent", "id": "agent-1", "state": state}))
        assert not done.wait(0.3), f"went on while the agent was {state}"
    r.set(key, orjson.dumps({"role": "agent", "id": "agent-1", "state": "idle"}))
    assert done.wait(5), "did not go on once the agent was idle"
    t.join()

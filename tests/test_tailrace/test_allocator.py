"""Batch buffers are reused by malloc instead of being mapped afresh (page faults)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Batches of a few hundred KB, made and freed in a worker thread, as a role does.
_CHILD = """
import resource, sys, threading
sys.path.insert(0, sys.argv[2])
if sys.argv[1] == "tuned":
    from tailrace.allocator import keep_batch_memory
    assert keep_batch_memory()
    assert keep_batch_memory()  # a second call (another role in the process) is harmless
def work():
    for i in range(300):
        a = b"a" * (300_000 + (i % 7) * 50_000)
        b = a + b"b"
        c = b"".join([b, a])
        del a, b, c
t = threading.Thread(target=work)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t.start(); t.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(ROOT)], check=True,
                         capture_output=True, text=True, timeout=60)
    return int(out.stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt thresholds are glibc's (Linux)")
def test_batch_sized_buffers_stop_faulting_pages_once_memory_is_kept() -> None:
    plain, tuned = _faults("plain"), _faults("tuned")
    # glibc's defaults map such buffers afresh: ~70 faults per MB; kept, a few in all.
    assert plain > 5000, plain
    assert tuned < plain / 10, (plain, tuned)


_ROLE = """
import sys
sys.path.insert(0, sys.argv[2])
from tailrace import allocator
from tailrace.cli.registry import build_registry
from tailrace.config import load_config
from tailrace.runtime import Runtime
assert not allocator._done
config = load_config(sys.argv[1], build_registry(entry_points=False))
Runtime(config, "sink", broker="redis://127.0.0.1:1/0")  # it connects later
print(allocator._done)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt thresholds are glibc's (Linux)")
def test_every_role_process_keeps_batch_memory_from_its_start(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"service: {{data_dir: {tmp_path / 'data'}}}\n"
                   "pipeline:\n  inputs: [{name: tail, path: /nonexistent/*.log}]\n"
                   f"  outputs: [{{name: file, match: '*', path: {tmp_path / 'o.log'}}}]\n")
    out = subprocess.run([sys.executable, "-c", _ROLE, str(cfg), str(ROOT)], check=True,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True"

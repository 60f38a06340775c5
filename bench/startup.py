"""Start-up benchmark: what `tailrace run` spends from launch to its first line out.

Writes a few access lines (bench/data.py) into a file, starts `tailrace run` on an embedded
Redis (the config of bench/e2e.py: tail from the head, the parser with time_key/time_format/
types, JSON lines into a file) and notes when each step is first seen from outside (Redis
every 4 ms, the output file every 2 ms, the run's children every 20 ms until each was
seen):

- each role process appearing (psutil), the redis-server process, its socket, its PING;
- the consumer groups created (the first role connected), each group's first lease
  (``lease:processors``, ``lease:sink:<output>``), each role's lifecycle record;
- the first raw entry (the agent read and produced), the first processed entry, the first
  line in the output file;

and each role's CPU seconds at the first line out (a forked role's count from its fork),
and the observer's own (this loop's: it shares the cores with the run).
``--rounds N`` repeats it and prints the median of each step; ``--compare-with REV`` runs a
temporary worktree of REV in turns (give it more than once to compare several; a
directory is run as it is, e.g. a checkout with uncommitted changes).

    python bench/startup.py --rounds 5
    python bench/startup.py --rounds 5 --compare-with HEAD~3
    python bench/startup.py --rounds 5 --compare-with HEAD~2 --compare-with HEAD~1

Each side's .pyc files are written first (:func:`compile_bytecode`). The imports of each
role are not seen from outside: ``python -X importtime -c "import
tailrace.cli.roles"`` shows them (with every role package: the registry needs them all).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.data import write_files  # noqa: E402
from bench.e2e import compile_bytecode, drop_worktree, role_of, worktree, write_config  # noqa: E402,E501

PREFIX = "tr"
OUTPUT = "out"  # the alias bench/e2e.py's config gives the file output
ROLES = ("agent", "processor", "sink", "redis")


def run_once(root: Path, work: Path, logs: Path, partitions: int) -> dict[str, float]:
    """One launch of checkout ``root``; seconds from launch to each step seen."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = write_config(work, str(logs / "*.log"), partitions, "access")
    out = work / "out" / "bench.log"
    sock = work / "data" / "redis" / "redis.sock"
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("TAILRACE_BROKER", None)
    seen: dict[str, float] = {}
    cpu: dict[str, float] = {}
    launched = time.monotonic()
    own_cpu = time.process_time()
    proc = subprocess.Popen([sys.executable, "-m", "tailrace", "run", "-c", str(cfg),
                             "--log-level", "warning"], cwd=root, env=env,
                            start_new_session=True)
    parent = psutil.Process(proc.pid)
    procs: dict[int, tuple[str | None, psutil.Process]] = {}
    client: redis.Redis | None = None

    def mark(step: str) -> None:
        seen.setdefault(step, time.monotonic() - launched)

    next_scan = next_look = 0.0
    try:
        while "first line out" not in seen:
            now = time.monotonic()
            if now - launched > 60:
                raise SystemExit(f"no line out 60 s after the launch; seen: {seen}")
            try:
                # A look at /proc costs CPU the run under test wants: every 20 ms, only
                # the launched process's children, and no more once every role was seen.
                if now >= next_scan and not all(f"{r} process" in seen for r in ROLES):
                    next_scan = now + 0.02
                    for pid in _children(proc.pid):
                        if pid not in procs or procs[pid][0] in (None, "run"):
                            child = psutil.Process(pid)
                            role = role_of(child)
                            procs[pid] = (role, child)
                            if role not in (None, "run"):  # "run": forked, not yet renamed
                                mark(f"{role} process")
            except psutil.Error:
                pass
            if client is None and sock.exists():
                mark("redis socket")
                client = redis.Redis(unix_socket_path=str(sock), socket_timeout=1)
            if client is not None and now >= next_look:
                next_look = now + 0.004
                try:
                    _look(client, partitions, seen, mark)
                except redis.RedisError:
                    pass
            if out.exists() and out.stat().st_size:
                mark("first line out")
                cpu["observer"] = time.process_time() - own_cpu  # this loop's own cost
                for role, p in [("run", parent), *procs.values()]:
                    try:
                        t = p.cpu_times()
                    except (psutil.Error, AttributeError):
                        continue
                    if role is not None:
                        cpu[role] = cpu.get(role, 0.0) + t.user + t.system
                break
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        if client is not None:
            client.close()
    seen.update({f"{role} CPU s": s for role, s in cpu.items()})
    return seen


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (the roles and the embedded Redis are all the
    supervisor's): one small file, where psutil's ``children()`` reads every process."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return [c.pid for c in psutil.Process(pid).children()]


def _look(client: redis.Redis, partitions: int, seen: dict[str, float],
          mark: Callable[[str], None]) -> None:
    # As little as tells the next step: the observer's CPU is taken from the run's.
    if "redis answers" not in seen:
        client.ping()
        mark("redis answers")
        return
    if "groups created" not in seen:
        if client.exists(f"{PREFIX}:meta"):
            mark("groups created")
        return
    pipe = client.pipeline(transaction=False)
    pipe.exists(f"{PREFIX}:meta")
    for group in ("processors", f"sink:{OUTPUT}"):
        for p in range(partitions):
            pipe.exists(f"{PREFIX}:{{p{p}}}:lease:{group}")
    pipe.keys(f"{PREFIX}:worker:*")
    for p in range(partitions):
        pipe.xlen(f"{PREFIX}:{{p{p}}}:raw")
    for p in range(partitions):
        pipe.xlen(f"{PREFIX}:{{p{p}}}:out")
    res = pipe.execute()
    if res[0]:
        mark("groups created")
    leases = res[1:1 + 2 * partitions]
    if any(leases[:partitions]):
        mark("processor lease")
    if any(leases[partitions:]):
        mark("sink lease")
    workers = res[1 + 2 * partitions]
    for key in workers:
        role = key.decode().split(":")[-1].split("-")[0]
        mark(f"{role} record")
    if any(res[2 + 2 * partitions:2 + 3 * partitions]):
        mark("first raw entry")
    if any(res[2 + 3 * partitions:]):
        mark("first processed entry")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lines", type=int, default=5000,
                    help="enough for a full first batch (it waits batch_wait_ms otherwise)")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--compare-with", metavar="REV", action="append", default=[])
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="tailrace-startup-"))
    write_files(base / "logs", "access", args.lines, 1)
    sides: list[tuple[str, Path]] = [("new", ROOT)]
    olds = [(rev, worktree(rev)) for rev in args.compare_with if not Path(rev).is_dir()]
    sides[:0] = [(rev, Path(rev) if Path(rev).is_dir() else dict(olds)[rev])
                 for rev in args.compare_with]
    for _, root in sides:
        compile_bytecode(root)
    print(f"# load {os.getloadavg()[0]:.2f}, {psutil.cpu_count()} cpus")
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in sides}
    try:
        for rnd in range(args.rounds):
            for label, root in sides:
                res = run_once(root, base / "run", base / "logs", args.partitions)
                results[label].append(res)
                steps = sorted((v, k) for k, v in res.items() if not k.endswith("CPU s"))
                print(f"{label} #{rnd + 1}: " + ", ".join(f"{k} {v:.3f}" for v, k in steps))
    finally:
        for _, old in olds:
            drop_worktree(old)
        shutil.rmtree(base, ignore_errors=True)
    labels = list(results)
    names = sorted({k for runs in results.values() for r in runs for k in r},
                   key=lambda k: (k.endswith("CPU s"),
                                  statistics.median([r.get(k, 99.0) for r in results[labels[-1]]])))
    print(f"\n| seconds from launch (median of {args.rounds}) | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for k in names:
        vals = [[r[k] for r in results[lb] if k in r] for lb in labels]
        print(f"| {k} | " + " | ".join(f"{statistics.median(v):.3f}" if v else "-"
                                         for v in vals) + " |")


if __name__ == "__main__":
    main()

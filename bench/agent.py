"""Edge agent benchmark: the agent alone, shipping raw batches to Redis.

Starts its own redis-server (a temporary folder, AOF everysec, like the embedded default),
writes nginx access-log lines into a staging folder, starts ``tailrace agent`` and, once it
is up, moves the files into the folder it follows (a rename: instant). The clock and the
CPU meter run from that moment until Redis holds every file's final offset. Scenarios:

- ``1 file``: one file of ``--lines`` lines;
- ``100 files``: ``--lines`` lines spread over 100 files;
- ``1000 files``: 1,000 files of ``--small-lines`` lines each, all kept open (RSS).

For each it prints lines/s, CPU seconds (user+system of the agent) per million lines,
the agent's peak RSS (VmHWM), its RSS once settled (every file open and read) and its
open descriptors.

    python bench/agent.py                    # 2,000,000 lines; 1 file, 100 files, 1000 files
    python bench/agent.py --quick            # 200,000 lines, for a smoke run
    python bench/agent.py --lines 1000000 --scenarios 1 --aof always
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tailrace.embedded import EmbeddedRedis  # noqa: E402
from tailrace.generate import nginx_line  # noqa: E402
from tailrace.keys import Keys  # noqa: E402

PARTITIONS = 8
POOL = 4096


@dataclass
class Result:
    name: str
    lines: int
    files: int
    seconds: float
    cpu_s: float
    peak_rss: int
    rss: int
    fds: int

    def show(self) -> str:
        rate = self.lines / self.seconds if self.seconds else 0.0
        cpu_m = self.cpu_s / (self.lines / 1e6) if self.lines else 0.0
        return (f"{self.name:<11} {self.files:>5} files {self.lines:>10,} lines  "
                f"{rate:>11,.0f} lines/s  {cpu_m:>6.2f} CPU s/M lines  "
                f"peak RSS {self.peak_rss / 2**20:>5.1f} MiB (now {self.rss / 2**20:>5.1f})  "
                f"{self.fds:>5} fds  "
                f"({self.seconds:.2f} s)")


def write_files(folder: Path, files: int, lines: int, seed: int = 3) -> int:
    """``lines`` nginx lines over ``files`` files; returns the total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    now = time.time()
    pool = [nginx_line(rng, now, f"/api/v1/items/{i}").encode() + b"\n" for i in range(POOL)]
    total = 0
    per = [lines // files + (1 if i < lines % files else 0) for i in range(files)]
    for i, n in enumerate(per):
        data = b"".join(pool[(i * 7 + k) % POOL] for k in range(n))
        (folder / f"app-{i:04d}.log").write_bytes(data)
        total += len(data)
    return total


def committed_bytes(client: redis.Redis, keys: Keys) -> int:
    pipe = client.pipeline(transaction=False)
    for p in range(PARTITIONS):
        pipe.hvals(keys.offsets(p))
    return sum(int(v) for vals in pipe.execute() for v in vals)


def proc_status(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status in bytes (VmHWM: peak RSS, VmRSS: RSS now)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def run_scenario(name: str, work: Path, url: str, client: redis.Redis, files: int,
                 lines: int, tail_options: dict[str, object]) -> Result:
    prefix = f"bench{os.getpid()}{name.replace(' ', '')}"
    keys = Keys(prefix)
    stage, logs = work / name / "stage", work / name / "logs"
    logs.mkdir(parents=True)
    total = write_files(stage, files, lines)
    cfg = {
        "service": {"broker": url, "data_dir": str(work / name / "data"),
                    "partitions": PARTITIONS, "prefix": prefix, "agent_id": "bench",
                    "log_level": "warning", "backlog": {"max_entries_per_partition": 0}},
        "pipeline": {"inputs": [{"name": "tail", "path": str(logs / "*.log"),
                                 "read_from_head": True, "refresh_interval_s": 0.25,
                                 **tail_options}]},
    }
    cfg_path = work / name / "agent.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "tailrace", "agent", "-c", str(cfg_path)],
                            cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        seen = "agent-seen:bench"
        deadline = time.monotonic() + 60
        while not client.hexists(keys.meta(), seen):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent did not start (exit code {proc.poll()})")
            time.sleep(0.02)
        ps = psutil.Process(proc.pid)
        cpu0 = sum(ps.cpu_times()[:2])
        t0 = time.monotonic()
        for f in stage.iterdir():
            os.rename(f, logs / f.name)
        while committed_bytes(client, keys) < total:
            if proc.poll() is not None:
                raise SystemExit(f"the agent exited with {proc.returncode}")
            time.sleep(0.01)
        seconds = time.monotonic() - t0
        cpu = sum(ps.cpu_times()[:2]) - cpu0
        fds = ps.num_fds()
        time.sleep(0.5)  # settled: every file open and read, nothing in flight
        peak, rss = proc_status(proc.pid, "VmHWM"), proc_status(proc.pid, "VmRSS")
    finally:
        proc.terminate()
        proc.wait(30)
    for p in range(PARTITIONS):  # free the server's memory for the next scenario
        client.delete(keys.raw(p), keys.offsets(p), keys.generations(p))
    return Result(name, lines, files, seconds, cpu, peak, rss, fds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000, help="lines for 1 and 100 files")
    ap.add_argument("--small-lines", type=int, default=200, help="lines per file, 1000 files")
    ap.add_argument("--scenarios", default="1,100,1000", help="which: 1, 100, 1000")
    ap.add_argument("--aof", choices=["everysec", "always", "no"], default="everysec")
    ap.add_argument("--quick", action="store_true", help="200,000 lines, 50 lines per file")
    ap.add_argument("--mem-buf-limit", default=None, help="tail option mem_buf_limit, e.g. 2MiB")
    ap.add_argument("--no-inotify", action="store_true", help="poll instead of inotify")
    args = ap.parse_args()
    if args.quick:
        args.lines, args.small_lines = 200_000, 50
    work = Path(tempfile.mkdtemp(prefix="tailrace-bench-agent-"))
    server = EmbeddedRedis(work / "redis-data", appendfsync=args.aof)
    try:
        server.start()
        url = server.url
        client = redis.Redis.from_url(url)
        print(f"redis {client.info('server')['redis_version']} (AOF {args.aof}), "
              f"{PARTITIONS} partitions, {os.cpu_count()} CPUs")
        wanted = {s.strip() for s in args.scenarios.split(",")}
        tail_options: dict[str, object] = {"inotify": not args.no_inotify}
        if args.mem_buf_limit:
            tail_options["mem_buf_limit"] = args.mem_buf_limit
        plans = [("1 file", 1, args.lines), ("100 files", 100, args.lines),
                 ("1000 files", 1000, 1000 * args.small_lines)]
        for name, files, lines in plans:
            if str(files) in wanted:
                print(run_scenario(name, work, url, client, files, lines, tail_options).show(),
                      flush=True)
        client.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

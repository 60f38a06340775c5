"""End-to-end benchmark: N nginx lines through `tailrace run` (agent, processor, file sink).

Writes N access-log lines into fresh files, then runs the whole pipeline on an embedded
Redis: the tail input, the stock `nginx` regex parser, JSON lines out. The clock runs from
the first batch in Redis (first read) to the last line in the output file. Prints lines/s,
MB/s, and per role the CPU seconds and peak RSS (sampled with psutil).

    python bench/e2e.py                      # 1,000,000 lines, 1 processor
    python bench/e2e.py --lines 200000 --processors 1,2 --files 4
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tailrace.generate import Generator  # noqa: E402


@dataclass
class RoleStats:
    """CPU (user, system) by pid, last sample, and the peak RSS of any process of a role."""

    cpu: dict[int, tuple[float, float]] = field(default_factory=dict)
    peak_rss: int = 0

    @property
    def user_s(self) -> float:
        return sum(u for u, _ in self.cpu.values())

    @property
    def sys_s(self) -> float:
        return sum(s for _, s in self.cpu.values())


def role_of(proc: psutil.Process) -> str | None:
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return None
    if any("redis-server" in c for c in cmd[:1]):
        return "redis"
    if "tailrace" in cmd and len(cmd) > cmd.index("tailrace") + 1:
        return cmd[cmd.index("tailrace") + 1]
    return None


def write_config(work: Path, files: str, partitions: int) -> Path:
    cfg = {
        "service": {"data_dir": str(work / "data"), "partitions": partitions,
                    "embedded": {"appendfsync": "everysec"}},
        "pipeline": {
            "inputs": [{"name": "tail", "tag": "nginx", "path": files, "read_from_head": True,
                        "refresh_interval_s": 0.2}],
            "filters": [{"name": "parser", "match": "*", "key": "log", "parser": "nginx",
                         "reserve_data": True}],
            "outputs": [{"name": "file", "alias": "out", "match": "*",
                         "path": str(work / "out" / "nginx.log")}],
        },
    }
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_once(lines: int, files: int, processors: int, partitions: int, logs: Path,
             work: Path) -> dict[str, object]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = write_config(work, str(logs / "*.log"), partitions)
    out = work / "out" / "nginx.log"
    input_bytes = sum(p.stat().st_size for p in logs.glob("*.log"))
    env = dict(os.environ)
    env.pop("TAILRACE_BROKER", None)
    launched = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tailrace", "run", "-c", str(cfg), "--processors",
         str(processors), "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True)
    parent = psutil.Process(proc.pid)
    stats: dict[str, RoleStats] = {}
    sock = work / "data" / "redis" / "redis.sock"
    client: redis.Redis | None = None
    t_first = t_last = None
    seen = pos = 0
    try:
        while True:
            for child in parent.children(recursive=True):
                role = role_of(child)
                if role is None:
                    continue
                st = stats.setdefault(role, RoleStats())
                try:
                    ct = child.cpu_times()
                    rss = child.memory_info().rss
                except psutil.Error:
                    continue
                st.cpu[child.pid] = (ct.user, ct.system)
                st.peak_rss = max(st.peak_rss, rss)
            if t_first is None:
                if client is None and sock.exists():
                    client = redis.Redis(unix_socket_path=str(sock))
                if client is not None:
                    try:
                        if any(client.xlen(f"tr:{{p{p}}}:raw") for p in range(partitions)):
                            t_first = time.monotonic()
                    except redis.RedisError:
                        pass
            if out.exists():
                with open(out, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                cut = chunk.rfind(b"\n") + 1
                seen += chunk.count(b"\n", 0, cut)
                pos += cut
                if seen >= lines:
                    t_last = time.monotonic()
                    break
            if time.monotonic() - launched > 900:
                raise SystemExit("benchmark timed out after 900 s")
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        if client is not None:
            client.close()
    assert t_first is not None and t_last is not None
    elapsed = t_last - t_first
    roles = {}
    for role, st in stats.items():
        roles[role] = {"cpu_s": round(st.user_s + st.sys_s, 2), "sys_s": round(st.sys_s, 2),
                       "peak_rss_mib": round(st.peak_rss / 2**20, 1)}
    return {
        "lines": lines, "files": files, "processors": processors, "partitions": partitions,
        "seconds": round(elapsed, 2), "lines_per_s": round(lines / elapsed),
        "mb_per_s": round(input_bytes / elapsed / 1e6, 1),
        "startup_s": round(t_first - launched, 2), "roles": roles,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--processors", default="1", help="comma list, run side by side")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--dir", default=None, help="work dir (default: a temp dir)")
    args = ap.parse_args()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="tailrace-bench-"))
    logs = base / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    gen = Generator(logs, files=args.files, fmt="plain", rate=0, total=args.lines)
    gen.run(chunk=5000)
    gen.close()
    print(f"# machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{psutil.cpu_count()} cpus, python {platform.python_version()}")
    print(f"# input: {args.lines:,} nginx lines in {args.files} file(s), "
          f"{sum(p.stat().st_size for p in logs.glob('*.log')) / 1e6:.1f} MB")
    for n in [int(x) for x in args.processors.split(",")]:
        res = run_once(args.lines, args.files, n, args.partitions, logs, base / f"run-p{n}")
        roles = res.pop("roles")
        assert isinstance(roles, dict)
        print(" ".join(f"{k}={v}" for k, v in res.items()))
        for role, r in sorted(roles.items()):
            print(f"    {role:10s} cpu_s={r['cpu_s']:7.2f} (system {r['sys_s']:5.2f})  "
                  f"cpu_us_per_line={r['cpu_s'] / args.lines * 1e6:5.2f}  "
                  f"peak_rss_mib={r['peak_rss_mib']:6.1f}")
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

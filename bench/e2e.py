"""End-to-end benchmark: N log lines through `tailrace run` (agent, processors, file sink).

Writes N lines of a workload (bench/data.py: ``access`` nginx lines by default, ``backfill``
over 30 days, ``json`` application logs in CRI files, ``simple`` the old shape) into fresh
files, then runs the whole pipeline on an embedded Redis (AOF everysec): the tail input
from the head, a parser with time_key / time_format / types, JSON lines out. The clock runs
from the first batch in Redis (first read) to the last line in the output file. Prints
lines/s, MB/s, the start-up (launch to first raw batch, launch to first line written), and
per role the CPU µs per line from the first batch on, the CPU seconds spent before it
(start-up) and the peak RSS (sampled with psutil).

``--compare-with REV`` checks REV out into a temporary git worktree and runs it and this
checkout in turns on the same data (``--rounds`` pairs, old first), so a noisy shared machine
hits both alike; the summary gives each side's median. Each side's .pyc files are written
first (:func:`compile_bytecode`), as an installed pipeline has them.

    python bench/e2e.py                                   # 1,000,000 access lines, 1 file
    python bench/e2e.py --lines 1000000 --files 4 --processors 2
    python bench/e2e.py --data backfill --lines 500000 --compare-with HEAD~3 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.data import WORKLOADS, write_files  # noqa: E402


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
    """The role of a process of the run (bench/startup.py too): its command line, else its
    name (a role forked by `tailrace run` names itself ``tr-<child>``)."""
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except psutil.Error:
        return None
    if any("redis-server" in c for c in cmd[:1]):
        return "redis"
    if name.startswith("tr-"):  # forked by `tailrace run`: the command line is the supervisor's
        return name.removeprefix("tr-").split("-")[0]
    if "tailrace" in cmd and len(cmd) > cmd.index("tailrace") + 1:
        return cmd[cmd.index("tailrace") + 1]
    return None


HELPERS = int(os.environ.get("TAILRACE_BENCH_HELPERS", "0"))  # service.processor_helpers


def write_config(work: Path, files: str, partitions: int, data: str) -> Path:
    wl = WORKLOADS[data]
    cfg: dict[str, Any] = {
        "service": {"data_dir": str(work / "data"), "partitions": partitions,
                    "embedded": {"appendfsync": "everysec"},
                    **({"processor_helpers": HELPERS} if HELPERS else {})},
        "pipeline": {
            "inputs": [{"name": "tail", "tag": "bench", "path": files, "read_from_head": True,
                        "format": wl.fmt, "refresh_interval_s": 0.2}],
            "filters": [{"name": "parser", "match": "*", "key": "log", "parser": wl.parser_name,
                         "reserve_data": True}],
            "outputs": [{"name": "file", "alias": "out", "match": "*",
                         "path": str(work / "out" / "bench.log")}],
        },
    }
    if wl.parser:
        cfg["parsers"] = [wl.parser]
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def redis_stats(client: redis.Redis, lines: int) -> dict[str, Any]:
    """Per line: calls and server µs of each command (INFO commandstats), AOF and net bytes."""
    cmds = client.info("commandstats")
    per: dict[str, tuple[float, float]] = {}
    for name, st in cmds.items():
        per[name.removeprefix("cmdstat_")] = (st["calls"] / lines, st["usec"] / lines)
    pers = client.info("persistence")
    stats = client.info("stats")
    return {"commands": per,
            "aof_bytes_per_line": (pers.get("aof_current_size", 0) + 0.0) / lines,
            "aof_rewrites": pers.get("aof_rewrites", 0),
            "net_in_per_line": stats.get("total_net_input_bytes", 0) / lines,
            "net_out_per_line": stats.get("total_net_output_bytes", 0) / lines}


def show_redis(rs: dict[str, Any]) -> None:
    print(f"    redis: aof {rs['aof_bytes_per_line']:.0f} B/line ({rs['aof_rewrites']} rewrites), "
          f"net in {rs['net_in_per_line']:.0f} B/line, out {rs['net_out_per_line']:.0f} B/line")
    rows = sorted(rs["commands"].items(), key=lambda kv: -kv[1][1])
    for name, (calls, usec) in rows:
        if usec * 1000 >= 1 or calls * 1000 >= 1:
            print(f"      {name:24s} calls/1000 lines {calls * 1000:8.3f}  "
                  f"server µs/line {usec:6.3f}")


def run_once(root: Path, lines: int, processors: int, partitions: int, data: str, logs: Path,
             work: Path, commandstats: bool = False) -> dict[str, Any]:
    """One `tailrace run` of checkout ``root`` over ``logs``; figures of the run."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = write_config(work, str(logs / "*.log"), partitions, data)
    out = work / "out" / "bench.log"
    input_bytes = sum(p.stat().st_size for p in logs.glob("*.log"))
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("TAILRACE_BROKER", None)
    os.sync()  # the data files' write-back must not land in the timed window
    launched = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tailrace", "run", "-c", str(cfg), "--processors",
         str(processors), "--log-level", "warning"],
        cwd=root, env=env, start_new_session=True)
    parent = psutil.Process(proc.pid)
    stats: dict[str, RoleStats] = {}
    roles: dict[int, str | None] = {proc.pid: "run"}
    procs: dict[int, psutil.Process] = {proc.pid: parent}
    sock = work / "data" / "redis" / "redis.sock"
    client: redis.Redis | None = None
    t_first = t_first_out = t_last = None
    rstats: dict[str, Any] | None = None
    seen = pos = 0
    next_sample = 0.0

    def sample() -> None:
        for child in parent.children(recursive=True):
            if roles.get(child.pid, "run") == "run":  # "run": forked, not named yet
                roles[child.pid] = role_of(child)
                procs[child.pid] = child
                if "run" in stats:
                    stats["run"].cpu.pop(child.pid, None)
        for pid, role in roles.items():
            if role is None:
                continue
            st = stats.setdefault(role, RoleStats())
            try:
                p = procs[pid]
                ct = p.cpu_times()
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            # Redis's AOF rewrites run in forked children, counted once they are reaped.
            kids = (ct.children_user, ct.children_system) if role == "redis" else (0.0, 0.0)
            st.cpu[pid] = (ct.user + kids[0], ct.system + kids[1])
            st.peak_rss = max(st.peak_rss, rss)

    at_first: dict[str, float] = {}  # role -> CPU seconds spent before the first batch

    try:
        while True:
            now = time.monotonic()
            if now >= next_sample:
                sample()
                next_sample = now + 0.2
            if t_first is None:
                if client is None and sock.exists():
                    client = redis.Redis(unix_socket_path=str(sock))
                if client is not None:
                    try:
                        pipe = client.pipeline(transaction=False)
                        for p in range(partitions):
                            pipe.xlen(f"tr:{{p{p}}}:raw")
                        if any(pipe.execute()):
                            t_first = time.monotonic()
                            if commandstats:  # from here on: this polling is not counted
                                client.config_resetstat()
                            sample()
                            at_first = {role: st.user_s + st.sys_s
                                        for role, st in stats.items()}
                    except redis.RedisError:
                        pass
            if out.exists():
                with open(out, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                cut = chunk.rfind(b"\n") + 1
                if cut and t_first_out is None:
                    t_first_out = time.monotonic()
                seen += chunk.count(b"\n", 0, cut)
                pos += cut
                if seen >= lines:
                    t_last = time.monotonic()
                    sample()
                    if commandstats and client is not None:
                        rstats = redis_stats(client, lines)
                    break
            if time.monotonic() - launched > 900:
                raise SystemExit("benchmark timed out after 900 s")
            time.sleep(0.005 if t_first_out is None else 0.02)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        if client is not None:
            client.close()
    assert t_first is not None and t_last is not None and t_first_out is not None
    elapsed = t_last - t_first
    if rstats is not None:
        show_redis(rstats)
    return {
        "lines_per_s": round(lines / elapsed), "seconds": round(elapsed, 2),
        "mb_per_s": round(input_bytes / elapsed / 1e6, 1),
        "first_batch_s": round(t_first - launched, 3),
        "first_line_s": round(t_first_out - launched, 3),
        "roles": {role: {"cpu_us": (st.user_s + st.sys_s - at_first.get(role, 0)) / lines * 1e6,
                         "start_cpu_s": at_first.get(role, 0.0),
                         "sys_us": st.sys_s / lines * 1e6,
                         "rss_mib": st.peak_rss / 2**20} for role, st in stats.items()},
    }


def show(label: str, res: dict[str, Any]) -> None:
    head = {k: v for k, v in res.items() if k != "roles"}
    total = sum(r["cpu_us"] for r in res["roles"].values())
    print(f"{label:8s} " + " ".join(f"{k}={v}" for k, v in head.items())
          + f" cpu_us_per_line={total:.2f}")
    for role, r in sorted(res["roles"].items()):
        print(f"    {role:10s} cpu_us_per_line={r['cpu_us']:5.2f} (system {r['sys_us']:4.2f})  "
              f"peak_rss_mib={r['rss_mib']:6.1f}  start-up cpu_s={r['start_cpu_s']:.2f}")


def summary(results: dict[str, list[dict[str, Any]]]) -> None:
    """Median of each figure per side, old and new next to each other."""
    labels = list(results)
    rows: list[tuple[str, list[str]]] = []

    def med(vals: list[float]) -> str:
        return f"{statistics.median(vals):,.2f}" if vals else "-"

    for key in ("lines_per_s", "first_batch_s", "first_line_s"):
        rows.append((key, [med([r[key] for r in results[lb]]) for lb in labels]))
    role_names = sorted({role for runs in results.values() for r in runs for role in r["roles"]})
    for role in role_names:
        for key, name in (("cpu_us", "cpu µs/line"), ("rss_mib", "peak RSS MiB"),
                          ("start_cpu_s", "start-up CPU s")):
            rows.append((f"{role} {name}", [med([r["roles"][role][key] for r in results[lb]
                                                 if role in r["roles"]]) for lb in labels]))
    rows.append(("total cpu µs/line", [med([sum(x["cpu_us"] for x in r["roles"].values())
                                            for r in results[lb]]) for lb in labels]))
    print("\n| median of " + ", ".join(f"{len(results[lb])} {lb}" for lb in labels) + " | "
          + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, vals in rows:
        print(f"| {name} | " + " | ".join(vals) + " |")


def worktree(rev: str) -> Path:
    """A temporary checkout of ``rev`` (removed by :func:`drop_worktree`)."""
    where = Path(tempfile.mkdtemp(prefix="tailrace-cmp-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
                   check=True, stdout=subprocess.DEVNULL)
    return where


def compile_bytecode(root: Path) -> None:
    """Write the checkout's .pyc files, as installing a wheel does. An import writes none
    under PYTHONDONTWRITEBYTECODE (set on the benchmark machine): a fresh worktree, or a
    module edited since its .pyc was written, is compiled from source at every launch
    (~0.15 s of CPU for a worktree with none), which no installed pipeline pays."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(root / pkg) for pkg in
                    ("tailrace", "edge_agent", "processors", "sinks"))], check=True)


def drop_worktree(where: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
                   check=False)
    shutil.rmtree(where, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--processors", default="1", help="comma list, run one after the other")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--data", default="access", choices=sorted(WORKLOADS),
                    help="; ".join(f"{w.name}: {w.help}" for w in WORKLOADS.values())
                    .replace("%", "%%"))  # argparse formats help with %
    ap.add_argument("--compare-with", metavar="REV", default=None,
                    help="also run git revision REV (a temporary worktree), in turns")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each side (in turns)")
    ap.add_argument("--commandstats", action="store_true",
                    help="print Redis INFO commandstats per line at the end of each run")
    ap.add_argument("--dir", default=None, help="work dir (default: a temp dir)")
    args = ap.parse_args()
    # A SIGTERM still stops the pipeline under test and removes the worktree (finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="tailrace-bench-"))
    logs = base / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    write_files(logs, args.data, args.lines, args.files)
    sides: list[tuple[str, Path]] = [("new", ROOT)]
    old: Path | None = None
    if args.compare_with:
        old = worktree(args.compare_with)
        sides.insert(0, (args.compare_with, old))
    for _, root in sides:
        compile_bytecode(root)
    print(f"# machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{psutil.cpu_count()} cpus, python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}")
    size = sum(p.stat().st_size for p in logs.glob("*.log"))
    print(f"# input: {args.lines:,} {args.data} lines in {args.files} file(s), {size / 1e6:.1f} MB "
          f"({size / args.lines:.0f} B/line)")
    try:
        for n in [int(x) for x in args.processors.split(",")]:
            results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in sides}
            for rnd in range(args.rounds):
                for label, root in sides:
                    res = run_once(root, args.lines, n, args.partitions, args.data, logs,
                                   base / f"run-{n}", args.commandstats)
                    results[label].append(res)
                    show(f"{label} p={n} #{rnd + 1}", res)
            if len(sides) > 1 or args.rounds > 1:
                summary(results)
    finally:
        if old is not None:
            drop_worktree(old)
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Processor benchmark: raw batches pre-loaded in Redis, nginx regex parser + grep + modify.

Starts its own redis-server (a temporary folder, AOF everysec), writes N lines (``--data``:
the workloads of bench/data.py, realistic nginx access lines by default) as
raw batches of 1,000 lines over the partitions, then runs ``tailrace processor`` workers
(one, then two, ...) until every entry is acknowledged. The clock runs from the first
processed batch to the last ack, so start-up (imports, leases) is not counted. Prints
lines/s, CPU seconds per million lines (user+system of the worker processes) and their
peak RSS. ``--inproc`` also times the chain alone (no Redis, no msgpack), and ``--profile``
prints a cProfile of the in-process handler.

    python bench/processor.py                       # 1,000,000 lines; 1 then 2 workers
    python bench/processor.py --quick               # 200,000 lines, for a smoke run
    python bench/processor.py --lines 500000 --workers 1,2,4 --inproc --profile
    python bench/processor.py --regex-engines       # re vs re+watchdog vs regex vs re2
    python bench/processor.py --compare-with HEAD~3 --rounds 2   # old and new in turns
    python bench/processor.py --compare-with HEAD~3 --rounds 3 --skip-workers  # handlers only

``--regex-engines`` compares the regex engines considered for regex safety on the stock
nginx pattern and on a catastrophic one; the optional engines (``regex``, ``google-re2``)
are used when importable (e.g. ``pip install --target /tmp/engines regex google-re2`` and
``PYTHONPATH=/tmp/engines``); they are not tailrace dependencies.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.data import WORKLOADS  # noqa: E402
from bench.data import lines as workload_lines  # noqa: E402
from tailrace.broker import ensure_groups  # noqa: E402
from tailrace.embedded import EmbeddedRedis  # noqa: E402
from tailrace.generate import nginx_line  # noqa: E402
from tailrace.keys import PROCESSORS_GROUP, Keys  # noqa: E402
from tailrace.wire import RawBatch, encode_raw  # noqa: E402

BATCH_LINES = 1000


def filters(data: str) -> list[dict[str, Any]]:
    """The workload's parser, then a grep and a modify (as a typical pipeline has)."""
    return [
        {"name": "parser", "match": "*", "key": "log", "parser": WORKLOADS[data].parser_name,
         "reserve_data": True},
        {"name": "grep", "match": "*", "exclude": "path ^/healthz"},
        {"name": "modify", "match": "*", "set": {"cluster": "bench"}, "remove": ["referer"]},
    ]


def make_config(work: Path, url: str, partitions: int, data: str) -> Path:
    cfg: dict[str, Any] = {
        "service": {"broker": url, "data_dir": str(work / "data"), "partitions": partitions,
                    "prefix": "bench", "log_level": "warning",
                    "backlog": {"max_entries_per_partition": 0}},
        "pipeline": {"filters": filters(data)},
    }
    parser = WORKLOADS[data].parser
    if parser:
        cfg["parsers"] = [parser]
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def make_batches(lines: int, partitions: int, data: str = "access",
                 seed: int = 7) -> list[tuple[int, bytes]]:
    """(partition, payload) of raw batches: one file per partition, 1000 lines each.

    ``simple`` is the shape before 2026-12 (50,000 lines a second, 5 paths); the others
    come from bench/data.py."""
    rng = random.Random(seed)
    start = time.time() - 3600
    paths = ["/api/v1/items", "/api/v1/users", "/healthz", "/static/app.js", "/login"]
    texts = None if data == "simple" else workload_lines(data, lines, seed)
    out: list[tuple[int, bytes]] = []
    offsets = [0] * partitions
    n = 0
    while n < lines:
        p = (n // BATCH_LINES) % partitions
        k = min(BATCH_LINES, lines - n)
        if texts is None:
            raw = [nginx_line(rng, start + (n + i) / 50_000,
                              f"{rng.choice(paths)}/{n + i}").encode() for i in range(k)]
        else:
            raw = [next(texts).encode() for _ in range(k)]
        offs = []
        pos = offsets[p]
        for ln in raw:
            offs.append(pos)
            pos += len(ln) + 1
        batch = RawBatch(agent="bench", input="tail.0", tag="web.access", path=f"/logs/{p}.log",
                         file=f"file-{p}", start=offsets[p], end=pos, lines=raw, offsets=offs,
                         meta={"host": "bench-host"})
        offsets[p] = pos
        out.append((p, encode_raw(batch)))
        n += k
    return out


def preload(client: redis.Redis, keys: Keys, partitions: int,
            batches: list[tuple[int, bytes]]) -> None:
    client.flushall()
    ensure_groups(client, keys, partitions, [])
    pipe = client.pipeline(transaction=False)
    for i, (p, payload) in enumerate(batches):
        pipe.xadd(keys.raw(p), {"v": b"1", "b": payload})
        if i % 200 == 199:
            pipe.execute()
    pipe.execute()


def progress(client: redis.Redis, keys: Keys, partitions: int) -> tuple[int, int]:
    """(entries acknowledged by the processors group, output entries written)."""
    pipe = client.pipeline(transaction=False)
    for p in range(partitions):
        pipe.xinfo_groups(keys.raw(p))
        pipe.xlen(keys.out(p))
    res = pipe.execute()
    acked = out = 0
    for p in range(partitions):
        groups, outlen = res[2 * p], res[2 * p + 1]
        for g in groups:
            if g["name"] == PROCESSORS_GROUP.encode():
                acked += int(g.get("entries-read") or 0) - int(g["pending"])
        out += int(outlen)
    return acked, out


def run_workers(cfg: Path, url: str, workers: int, client: redis.Redis, keys: Keys,
                partitions: int, total_entries: int, lines: int,
                redis_proc: psutil.Process | None, root: Path = ROOT) -> dict[str, float]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(root))
    procs = [subprocess.Popen([sys.executable, "-m", "tailrace", "processor", "-c", str(cfg)],
                              env=env, cwd=root) for _ in range(workers)]
    ps = [psutil.Process(p.pid) for p in procs]
    peak = 0
    t0 = cpu0 = None
    try:
        while True:
            acked, out = progress(client, keys, partitions)
            peak = max([peak] + [p.memory_info().rss for p in ps])
            now = time.perf_counter()
            if t0 is None and out > 0:
                t0 = now
                cpu0 = sum(sum(p.cpu_times()[:2]) for p in ps)
                rcpu0 = sum(redis_proc.cpu_times()[:2]) if redis_proc else 0.0
            if acked >= total_entries:
                t1 = now
                cpu1 = sum(sum(p.cpu_times()[:2]) for p in ps)
                rcpu1 = sum(redis_proc.cpu_times()[:2]) if redis_proc else 0.0
                break
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a worker exited early; see its output above")
            time.sleep(0.02)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    assert t0 is not None and cpu0 is not None
    elapsed = t1 - t0
    return {"lines_s": lines / elapsed, "elapsed_s": elapsed,
            "cpu_per_m": (cpu1 - cpu0) / lines * 1e6, "peak_rss_mb": peak / 2**20,
            "redis_cpu_per_m": (rcpu1 - rcpu0) / lines * 1e6}


def inproc(cfg_path: Path, batches: list[tuple[int, bytes]], lines: int,
           profile: bool) -> None:
    """Time the handler (decode, chain, encode) in this process, no Redis."""
    from processors.worker import ProcessorHandler
    from tailrace.cli.registry import build_registry
    from tailrace.config import load_config
    from tailrace.handler import LeaseGuard
    from tailrace.lifecycle import ThreadRecord

    config = load_config(cfg_path, build_registry(entry_points=False))
    handler = ProcessorHandler(config, ThreadRecord("bench", "processor"))
    entries = [(f"{i}-0".encode(), {b"v": b"1", b"b": payload})
               for i, (_, payload) in enumerate(batches)]
    guard: LeaseGuard = None  # type: ignore[assignment]
    prof = cProfile.Profile() if profile else None
    cpu = time.process_time()
    t = time.perf_counter()
    if prof:
        prof.enable()
    for i in range(0, len(entries), 8):
        handler.handle(0, entries[i:i + 8], guard)
    if prof:
        prof.disable()
    elapsed = time.perf_counter() - t
    cpu = time.process_time() - cpu
    print(f"in-process handler: {lines / elapsed:,.0f} lines/s, "
          f"{cpu / lines * 1e6:.2f} CPU s per million lines"
          + (" (profiled: slower)" if prof else ""))
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


# The in-process handler of one checkout, run in a child interpreter so that REV's code is
# what gets imported: each chunk of 4 entries counts with its best of ``reps`` passes
# (wall clock; the best filters out the other processes of a shared machine).
_INPROC_CHILD = """
import pickle, sys, time
root, cfg, data, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, root)
from processors.worker import ProcessorHandler
from tailrace.cli.registry import build_registry  # every side's own way to list built-ins
from tailrace.config import load_config
from tailrace.lifecycle import ThreadRecord
handler = ProcessorHandler(load_config(cfg, build_registry(entry_points=False)),
                           ThreadRecord("bench", "processor"))
with open(data, "rb") as f:
    batches = pickle.load(f)
entries = [(f"{i}-0".encode(), {b"v": b"1", b"b": p}) for i, (_, p) in enumerate(batches)]
chunks = [entries[i:i + 4] for i in range(0, len(entries), 4)]
best = [1e9] * len(chunks)
cpu = time.process_time()
for _ in range(reps):
    for j, chunk in enumerate(chunks):
        t = time.perf_counter()
        handler.handle(0, chunk, None)
        best[j] = min(best[j], time.perf_counter() - t)
cpu = time.process_time() - cpu
print(sum(best), cpu / reps)
"""


def inproc_compare(sides: list[tuple[str, Path]], cfg: Path, work: Path,
                   batches: list[tuple[int, bytes]], lines: int, rounds: int,
                   reps: int = 5) -> None:
    """The in-process handler of each side, in turns: µs per line, best of ``reps`` per
    chunk, and the mean CPU of a pass (which a shared machine inflates)."""
    import pickle

    data = work / "batches.pkl"
    data.write_bytes(pickle.dumps(batches))
    results: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in sides}
    for _ in range(rounds):
        for label, root in sides:
            out = subprocess.run([sys.executable, "-c", _INPROC_CHILD, str(root), str(cfg),
                                  str(data), str(reps)], check=True, capture_output=True,
                                 text=True, cwd=root).stdout.split()
            best, cpu = float(out[0]), float(out[1])
            results[label].append((best, cpu))
            print(f"{label:8s} in-process handler: {best / lines * 1e6:6.2f} µs per line "
                  f"(best of {reps} per chunk), {cpu / lines * 1e6:6.2f} CPU µs per line "
                  "(mean pass)")
    for label, runs in results.items():
        best = statistics.median(b for b, _ in runs)
        print(f"{label:8s} median of {len(runs)}: {best / lines * 1e6:.2f} µs per line")


def regex_engines(n: int = 100_000) -> None:
    """Matches+groupdict per second of each engine; time to give up on ``^(a+)+$``."""
    import re

    from processors.parsers.regex import translate_onigmo
    from processors.safe_regex import WATCHDOG, RegexTimeout, SafePattern
    from processors.stock import STOCK_PARSERS

    rng = random.Random(1)
    lines = [nginx_line(rng, 1.7e9 + i, f"/api/{i}") for i in range(2000)]
    src = translate_onigmo(next(d for d in STOCK_PARSERS if d["name"] == "nginx")["regex"])
    engines: list[tuple[str, Any, Any]] = []
    plain = re.compile(src)
    engines.append(("re", plain.search, None))
    safe = SafePattern(src, budget_ms=50)
    engines.append(("re + watchdog (tailrace)", safe.search, "watchdog"))
    try:
        import regex  # type: ignore[import-not-found]

        rx = regex.compile(src)
        engines.append(("regex", rx.search, "regex0"))
        engines.append(("regex, timeout=50ms", lambda t: rx.search(t, timeout=0.05), "regex"))
    except ImportError:
        print("(regex package not importable: skipped)")
    try:
        import re2  # type: ignore[import-not-found]

        engines.append(("google-re2", re2.compile(src).search, "re2"))
    except ImportError:
        print("(google-re2 not importable: skipped)")
    evil = "a" * 40 + "!"
    for name, search, kind in engines:
        with WATCHDOG.armed():
            t = time.perf_counter()
            for i in range(n):
                search(lines[i % 2000]).groupdict()
            rate = n / (time.perf_counter() - t)
            cpu = time.process_time()
            verdict = "unbounded (not run)"
            if kind is not None:
                try:
                    if kind == "watchdog":
                        SafePattern(r"^(a+)+$", budget_ms=50).match(evil)
                    elif kind == "regex":
                        regex.match(r"^(a+)+$", evil, timeout=0.05)
                    elif kind == "regex0":
                        regex.match(r"^(a+)+$", evil)
                    else:
                        re2.match(r"^(a+)+$", evil)
                    verdict = f"finished in {(time.process_time() - cpu) * 1000:.1f} ms"
                except (RegexTimeout, TimeoutError):
                    verdict = f"stopped after {(time.process_time() - cpu) * 1000:.0f} ms"
        print(f"{name:26s} {rate:>10,.0f} nginx matches+groupdict/s   ^(a+)+$ on 40 a's + '!': "
              f"{verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="200,000 lines, workers 1,2")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts to run")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--inproc", action="store_true", help="also time the chain in-process")
    ap.add_argument("--profile", action="store_true", help="cProfile the in-process run")
    ap.add_argument("--skip-workers", action="store_true", help="only the in-process run")
    ap.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"],
                    help="the benchmark Redis's AOF fsync policy (default everysec)")
    ap.add_argument("--data", default="access", choices=sorted(WORKLOADS),
                    help="; ".join(f"{w.name}: {w.help}" for w in WORKLOADS.values())
                    .replace("%", "%%"))  # argparse formats help with %
    ap.add_argument("--compare-with", metavar="REV", default=None,
                    help="also run the workers of git revision REV (a temporary worktree), "
                    "in turns with this checkout's, on the same preloaded batches; with "
                    "--inproc or --skip-workers, also both in-process handlers in turns")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each side (in turns)")
    ap.add_argument("--regex-engines", action="store_true",
                    help="compare regex engines (speed, catastrophic backtracking) and exit")
    args = ap.parse_args()
    if args.regex_engines:
        regex_engines()
        return
    lines = 200_000 if args.quick else args.lines
    work = Path(tempfile.mkdtemp(prefix="tailrace-bench-proc-"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; {lines:,} {args.data} "
          f"lines in batches of {BATCH_LINES} over {args.partitions} partitions; filters: "
          + " + ".join(f["name"] for f in filters(args.data)))
    batches = make_batches(lines, args.partitions, args.data)
    server = EmbeddedRedis(work / "data", args.appendfsync).start()
    redis_proc = psutil.Process(server.owned_pid) if server.owned_pid else None
    try:
        client = redis.Redis.from_url(server.url)
        keys = Keys("bench")
        cfg = make_config(work, server.url, args.partitions, args.data)
        sides: list[tuple[str, Path]] = [("new", ROOT)]
        if args.compare_with:
            from e2e import drop_worktree, worktree

            old = worktree(args.compare_with)
            sides.insert(0, (args.compare_with, old))
        try:
            if args.compare_with and (args.inproc or args.skip_workers):
                inproc_compare(sides, cfg, work, batches, lines, args.rounds)
            elif args.inproc or args.profile or args.skip_workers:
                inproc(cfg, batches, lines, args.profile)
            for n in [int(x) for x in args.workers.split(",") if x] if not args.skip_workers \
                    else []:
                for _ in range(args.rounds):
                    for label, root in sides:
                        preload(client, keys, args.partitions, batches)
                        os.sync()  # the preload's AOF write-back must not land in the timing
                        r = run_workers(cfg, server.url, n, client, keys, args.partitions,
                                        len(batches), lines, redis_proc, root)
                        print(f"{label:8s} {n} worker{'s' if n > 1 else ' '}: "
                              f"{r['lines_s']:>10,.0f} lines/s  "
                              f"{r['cpu_per_m']:6.2f} CPU s per million lines  "
                              f"peak RSS {r['peak_rss_mb']:6.1f} MiB per worker  "
                              f"(redis {r['redis_cpu_per_m']:.2f} CPU s/M; "
                              f"{r['elapsed_s']:.2f} s)")
        finally:
            if len(sides) > 1:
                drop_worktree(sides[0][1])
        client.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

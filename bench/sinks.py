"""Sink throughput: records preloaded in Redis, then the file sink and the es sink alone.

    python bench/sinks.py            # 1,000,000 records
    python bench/sinks.py --quick    # 100,000 records
    python bench/sinks.py --only file --compare-with HEAD~1 --rounds 3   # old and new in turns
    python bench/sinks.py --only es --records 300000 --workers 2 --batch-docs 5000
    python bench/sinks.py --only es --server es8 --records 200000 --es-runs 1x5000,2x1000

It starts its own redis-server (append-only, fsync every second, on a Unix socket: as the
embedded broker; ``--tcp`` for 127.0.0.1), writes the records into the ``out`` streams as
processors would, then runs one real ``tailrace sink --output NAME`` process per output
until its group has acknowledged every entry. The records (``--data``): ``access``
(default) is what ``bench/e2e.py``'s sink gets, made by the real processor chain in this
process from bench/data.py's nginx lines (the access regex with time_key and types, ~340 B
of JSON a record, entries of ``--per-entry`` lines, all on one partition as one busy file
gives); ``simple`` the records before 2026-12 (the agent's metadata, ~440 B, spread over
every partition). The sink starts on empty streams (its group at the end of the preloaded
entries) and is handed the backlog once idle, so its start-up CPU is printed apart and not
in the per-line figure. The es sink writes to ``tests/esserver.py`` (a separate process on
the same machine), or with ``--server es8`` (``os2``, ``os3``) to a real
Elasticsearch/OpenSearch (``tests/esreal.py``: fetched once, started here with ``-Xms512m
-Xmx1g``, stopped at the end; its CPU is the server JVM's and its launcher's). Printed per
output: lines/s (from the first delivery to the last ack), the sink's CPU µs per line and
its start-up CPU, its peak RSS, and the CPU split between sink, server and Redis.
``--compare-with REV`` also runs the sinks of git revision REV (a temporary worktree) in
turns with this checkout's, each run on freshly preloaded streams, and prints the medians
side by side. ``--rate N`` appends the entries at N lines a second while the sink runs
instead of handing it a backlog: a sink that keeps up wakes for each entry, as in
``bench/e2e.py``, and on this VM the same work then costs more CPU the longer it slept
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import psutil
import redis
import urllib3
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tailrace.broker import ensure_partition_count  # noqa: E402
from tailrace.embedded import AOF_REWRITE_MIN_SIZE, redis_server_binary  # noqa: E402
from tailrace.keys import Keys, sink_group  # noqa: E402
from tailrace.wire import RawBatch, encode_processed, encode_raw, encode_records  # noqa: E402

PREFIX = "bench"
BASE_TIME = 1_700_000_000.0
#: Lines of the access workload a processor puts in one entry: a 256 KiB raw batch
#: (``batch_bytes``' default) of ~222-byte lines.
ACCESS_PER_ENTRY = 1180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def records(start: int, n: int) -> list[dict[str, Any]]:
    """Records shaped like the nginx parser's output, with agent metadata (``simple``)."""
    return [{
        "_id": f"9f2c61d0a1b2c3d4-{(start + i) * 97:x}", "_tag": "kube.web.nginx",
        "time": BASE_TIME + (start + i) * 0.0005,
        "log": f'10.1.{i % 200}.{i % 250} - - [14/Nov/2023:22:13:20 +0000] "GET /api/v1/items/'
               f'{start + i} HTTP/1.1" 200 {512 + i % 4096} "-" "curl/8.4.0"',
        "remote": f"10.1.{i % 200}.{i % 250}", "host": "-", "user": "-", "method": "GET",
        "path": f"/api/v1/items/{start + i}", "code": 200, "size": 512 + i % 4096,
        "referer": "-", "agent": "curl/8.4.0", "stream": "stdout",
        "kubernetes": {"pod": "web-7d9f8", "namespace": "shop", "container": "nginx"},
    } for i in range(n)]


def simple_payloads(total: int, per_entry: int, wire: int) -> list[bytes]:
    out = []
    for start in range(0, total, per_entry):
        batch = records(start, min(per_entry, total - start))
        out.append(encode_processed(batch) if wire == 2 else encode_records(batch))
    return out


def access_payloads(total: int, per_entry: int, work: Path) -> list[bytes]:
    """What bench/e2e.py's processor writes: its chain run here on the access lines."""
    from bench.data import WORKLOADS, lines
    from processors.worker import ProcessorHandler
    from tailrace.cli.registry import build_registry
    from tailrace.config import load_config
    from tailrace.lifecycle import ThreadRecord

    wl = WORKLOADS["access"]
    cfg = {"service": {"data_dir": str(work / "proc")},
           "parsers": [wl.parser],
           "pipeline": {"filters": [{"name": "parser", "match": "*", "key": "log",
                                     "parser": wl.parser_name, "reserve_data": True}]}}
    path = work / "processor.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    handler = ProcessorHandler(load_config(path, build_registry(entry_points=False)),
                               ThreadRecord("bench", "processor"))
    texts = lines("access", total)
    out: list[bytes] = []
    pos = 0
    for n, start in enumerate(range(0, total, per_entry)):
        raw = [next(texts).encode() for _ in range(min(per_entry, total - start))]
        offs = []
        begin = pos
        for ln in raw:
            offs.append(pos)
            pos += len(ln) + 1
        batch = RawBatch(agent="bench", input="tail.0", tag="bench", path="/logs/access-0.log",
                         file="file-0", start=begin, end=pos, lines=raw, offsets=offs,
                         time=BASE_TIME + n)
        res = handler.handle(0, [(f"{n + 1}-0".encode(), {b"v": b"1", b"b": encode_raw(batch)})],
                             None)  # type: ignore[arg-type]
        out.extend(res.outputs)
    return out


def start_redis(tmp: Path, tcp: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on a Unix socket, as the embedded broker (``tcp``: on 127.0.0.1)."""
    port = free_port()
    sock = tmp / "redis.sock"
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE,
         *([] if tcp else ["--unixsocket", str(sock)]),
         "--logfile", str(tmp / "redis.log")], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0" if tcp else f"unix://{sock}"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    client.close()
    return proc, url


def preload(client: redis.Redis, keys: Keys, payloads: list[bytes], fill: int, partitions: int,
            output: str, wire: int) -> None:
    """``out`` entries as processors write them, round-robin over the first ``fill``
    partitions; ``output``'s group starts at their end (:func:`hand_over` moves it back)."""
    client.flushall()
    ensure_partition_count(client, keys, partitions)
    pipe = client.pipeline(transaction=False)
    for n, payload in enumerate(payloads):
        pipe.xadd(keys.out(n % fill), {"v": str(wire), "b": payload})
        if n % 50 == 49:
            pipe.execute()
    pipe.execute()
    for p in range(partitions):
        client.xgroup_create(keys.out(p), sink_group(output), id="$", mkstream=True)
    os.sync()  # the preload's AOF write-back must not land in the timed window


def hand_over(client: redis.Redis, keys: Keys, output: str, partitions: int) -> None:
    """Give ``output``'s group the preloaded entries (its sink is up and idle)."""
    for p in range(partitions):
        client.xgroup_setid(keys.out(p), sink_group(output), id="0")


def group_state(client: redis.Redis, keys: Keys, output: str, partitions: int
                ) -> tuple[bool, bool]:
    """(started: something read, done: everything read and acknowledged)."""
    group = sink_group(output).encode()
    started, done = False, True
    for p in range(partitions):
        stream = keys.out(p)
        last = client.xinfo_stream(stream)["last-generated-id"]
        for g in client.xinfo_groups(stream):
            if g["name"] != group:
                continue
            if g["last-delivered-id"] != b"0-0":
                started = True
            if g["pending"] or g["last-delivered-id"] != last:
                done = False
    return started, done


def reading(client: redis.Redis, keys: Keys, output: str, partitions: int) -> bool:
    """Whether the sink of ``output`` has made its first read (its consumer exists)."""
    for p in range(partitions):
        try:
            if client.xinfo_consumers(keys.out(p), sink_group(output)):
                return True
        except redis.ResponseError:
            pass
    return False


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(proc: psutil.Process, children: bool = True) -> float:
    """CPU seconds of ``proc`` and of its live children (a server JVM under its launcher)."""
    total = 0.0
    for p in (proc, *(proc.children(recursive=True) if children else ())):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def wait_idle(proc: subprocess.Popen[bytes], ps: psutil.Process, client: redis.Redis,
              keys: Keys, output: str, partitions: int) -> float:
    """Wait until the sink reads and its CPU stands still; its CPU seconds then."""
    deadline = time.monotonic() + 60
    last = -1.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the {output} sink exited early with {proc.returncode}")
        now = cpu_s(ps)
        if reading(client, keys, output, partitions) and now - last < 0.005:
            return now
        last = now
        time.sleep(0.3)
    raise SystemExit(f"the {output} sink did not become idle within 60 s")


def feed(url: str, keys: Keys, payloads: list[bytes], fill: int, wire: int, rate: float,
         per_entry: int, burst: int = 1) -> None:
    """Append the entries at ``rate`` lines a second, as a processor keeping up would,
    ``burst`` at a time (what a sink lingering for more entries per read would get)."""
    client = redis.Redis.from_url(url)
    t0 = time.monotonic()
    for n in range(0, len(payloads), burst):
        delay = t0 + n * per_entry / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pipe = client.pipeline(transaction=False)
        for i, payload in enumerate(payloads[n:n + burst], n):
            pipe.xadd(keys.out(i % fill), {"v": str(wire), "b": payload})
        pipe.execute()
    client.close()


def run_sink(root: Path, cfg: Path, url: str, output: str, client: redis.Redis, keys: Keys,
             partitions: int, total: int, others: dict[str, psutil.Process],
             feeder: threading.Thread | None = None) -> dict[str, Any]:
    env = dict(os.environ, TAILRACE_BROKER=url, PYTHONPATH=str(root))
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tailrace", "sink", "-c", str(cfg),
                             "--output", output, "--log-level", "warning"], env=env, cwd=root)
    ps = psutil.Process(proc.pid)
    try:
        start_cpu = wait_idle(proc, ps, client, keys, output, partitions)
        t_up = time.monotonic()
        # Redis's own CPU only: an AOF rewrite's child may come and go.
        before = {name: cpu_s(p, name != "redis") for name, p in others.items()}
        hand_over(client, keys, output, partitions)
        if feeder is not None:
            feeder.start()
        t_first = None
        while True:
            feeding = feeder is not None and feeder.is_alive()  # before the state: a race
            started, done = group_state(client, keys, output, partitions)
            done = done and not feeding
            now = time.monotonic()
            if started and t_first is None:
                t_first = now
            if done:
                break
            if proc.poll() is not None:
                raise SystemExit(f"the {output} sink exited early with {proc.returncode}")
            time.sleep(0.02)
        t_done = time.monotonic()
        sink_cpu = cpu_s(ps) - start_cpu
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    used = {name: cpu_s(p, name != "redis") - before[name] for name, p in others.items()}
    steady = t_done - (t_first or t_up)
    return {"output": output, "records": total, "startup_s": t_up - t0, "steady_s": steady,
            "lines_per_s": total / steady, "startup_cpu_s": start_cpu, "sink_cpu_s": sink_cpu,
            "cpu_us_per_line": sink_cpu / total * 1e6, "peak_rss_mib": rss,
            **{f"{k}_cpu_s": v for k, v in used.items()}}


def report(label: str, r: dict[str, Any]) -> None:
    parts = {"sink": r["sink_cpu_s"], **{k[:-6]: v for k, v in r.items()
                                         if k.endswith("_cpu_s") and k not in
                                         ("sink_cpu_s", "startup_cpu_s")}}
    total_cpu = sum(parts.values()) or 1.0
    split = ", ".join(f"{k} {v:.2f}s ({v / total_cpu:.0%})" for k, v in parts.items())
    print(f"{label}{r['output']:>5}: {r['records']:,} lines in {r['steady_s']:.2f}s = "
          f"{r['lines_per_s']:,.0f} lines/s; sink CPU {r['sink_cpu_s']:.2f}s = "
          f"{r['cpu_us_per_line']:.2f} µs per line (start-up {r['startup_cpu_s']:.2f}s CPU, "
          f"{r['startup_s']:.1f}s); peak RSS {r['peak_rss_mib']:.0f} MiB; CPU split: {split}",
          flush=True)


def summary(results: dict[str, list[dict[str, Any]]]) -> None:
    """Median of each figure per side, old and new next to each other."""
    labels = list(results)

    def med(key: str, label: str) -> str:
        vals = [r[key] for r in results[label]]
        return f"{statistics.median(vals):,.2f}" if vals else "-"

    print("\n| median of " + ", ".join(f"{len(results[lb])} {lb}" for lb in labels) + " | "
          + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    keys = ["lines_per_s", "cpu_us_per_line", "startup_cpu_s", "peak_rss_mib"]
    keys += sorted({k for runs in results.values() for r in runs for k in r
                    if k.endswith("_cpu_s") and k not in ("sink_cpu_s", "startup_cpu_s")})
    for key in keys:
        print(f"| {key} | " + " | ".join(med(key, lb) for lb in labels) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 records.")
    ap.add_argument("--data", choices=["access", "simple"], default="access",
                    help="access: what bench/e2e.py's sink gets (default); simple: the "
                         "records before 2026-12")
    ap.add_argument("--per-entry", type=int, default=None,
                    help=f"Records per stream entry (access: {ACCESS_PER_ENTRY}, simple: 1000).")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--fill", type=int, default=None,
                    help="Partitions that get entries (access: 1, one busy file; simple: all).")
    ap.add_argument("--only", choices=["file", "es"], default=None)
    ap.add_argument("--workers", type=int, default=2, help="es: bulk requests in flight.")
    ap.add_argument("--batch-docs", type=int, default=5000, help="es: documents per request.")
    ap.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True,
                    help="file: fsync before each commit.")
    ap.add_argument("--server", default="test", choices=["test", "es8", "os2", "os3"],
                    help="es: the test server (default) or a real one (tests/esreal.py).")
    ap.add_argument("--es-runs", default="",
                    help="es: several runs against one server, WORKERSxBATCH_DOCS each "
                         "(e.g. 1x5000,2x5000,2x1000); default --workers x --batch-docs.")
    ap.add_argument("--keep", action="store_true", help="Keep the temporary folder.")
    ap.add_argument("--cache", metavar="DIR", default=None,
                    help="keep the made entries in DIR and reuse them on the next run (the "
                         "processor chain takes ~40 s for 1,000,000 access lines)")
    ap.add_argument("--wire", type=int, choices=[1, 2], default=2,
                    help="wire format of the preloaded entries (2: what processors write; "
                         "1 with --data simple only)")
    ap.add_argument("--compare-with", metavar="REV", default=None,
                    help="also run the sinks of git revision REV (a temporary worktree), in "
                         "turns with this checkout's")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each side (in turns)")
    ap.add_argument("--rate", type=float, default=0,
                    help="append the entries at this many lines a second while the sink runs "
                         "(as bench/e2e.py's processor does, e.g. 120000: the sink keeps up "
                         "and reads one entry at a time) instead of handing it a backlog")
    ap.add_argument("--tcp", action="store_true",
                    help="the sink talks to Redis over TCP (default: a Unix socket, as "
                         "bench/e2e.py's embedded Redis)")
    ap.add_argument("--burst", type=int, default=1,
                    help="with --rate: append this many entries at a time (the same rate)")
    args = ap.parse_args()
    if args.wire == 1 and args.data != "simple":
        ap.error("--wire 1 needs --data simple (the processor writes version 2)")
    # SIGTERM runs the cleanup below too (a real server is a process group of its own).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    total = 100_000 if args.quick else args.records
    per_entry = args.per_entry or (ACCESS_PER_ENTRY if args.data == "access" else 1000)
    fill = min(args.fill or (1 if args.data == "access" else args.partitions), args.partitions)
    runs = [tuple(int(x) for x in run.split("x")) for run in args.es_runs.split(",") if run]
    runs = runs or [(args.workers, args.batch_docs)]
    # One es output (and group, and index) per run, so one server start serves them all.
    es_outputs = {f"es{i}-w{w}-b{b}" if len(runs) > 1 else "es": (w, b)
                  for i, (w, b) in enumerate(runs, 1)}
    outputs = ([] if args.only == "es" else ["file"]) + ([] if args.only == "file"
                                                          else list(es_outputs))
    tmp = Path(tempfile.mkdtemp(prefix="tailrace-bench-sinks-"))
    redis_proc, url = start_redis(tmp, args.tcp)
    es_proc = None
    real = None
    sides: list[tuple[str, Path]] = [("new", ROOT)]
    try:
        if args.compare_with:
            from bench.e2e import worktree

            sides.insert(0, (args.compare_with, worktree(args.compare_with)))
        client = redis.Redis.from_url(url)
        keys = Keys(PREFIX)
        t = time.monotonic()
        cached = Path(args.cache) / f"{args.data}-{total}-{per_entry}-v{args.wire}.bin" \
            if args.cache else None
        if cached is not None and cached.exists():
            payloads = msgpack.unpackb(cached.read_bytes())
        else:
            payloads = (access_payloads(total, per_entry, tmp) if args.data == "access"
                        else simple_payloads(total, per_entry, args.wire))
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(msgpack.packb(payloads))
        size = sum(map(len, payloads))
        print(f"made {total:,} {args.data} records in {len(payloads)} entries ({size / total:.0f} "
              f"B a record) in {time.monotonic() - t:.1f}s, on {fill} of {args.partitions} "
              f"partitions; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
        es_url = ""
        if es_outputs and args.only != "file" and args.server != "test":
            sys.path.insert(0, str(ROOT / "tests"))
            from esreal import SERVERS, RealServer

            t = time.monotonic()
            real = RealServer(SERVERS[args.server], tmp / args.server).start()
            es_url = real.url
            print(f"{real.spec.label} up in {time.monotonic() - t:.0f}s", flush=True)
        elif args.only != "file":
            port = free_port()
            es_proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "esserver.py"),
                                        "--port", str(port)], stdout=subprocess.PIPE)
            assert es_proc.stdout is not None
            es_proc.stdout.readline()
            es_url = f"http://127.0.0.1:{port}"
        doc = {
            "service": {"partitions": args.partitions, "prefix": PREFIX,
                        "data_dir": str(tmp / "data")},
            "pipeline": {"outputs": [
                {"name": "file", "alias": "file", "path": str(tmp / "out" / "all.log"),
                 "format": "json", "fsync": args.fsync},
                *({"name": "es", "alias": alias, "hosts": [es_url or "http://127.0.0.1:9"],
                   "index": f"bench-{alias}-%Y.%m.%d", "workers": w, "batch_docs": b}
                  for alias, (w, b) in es_outputs.items()),
            ]},
        }
        cfg = tmp / "bench.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        others = {"redis": psutil.Process(redis_proc.pid)}
        if es_proc is not None:
            others["server"] = psutil.Process(es_proc.pid)
        if real is not None and real.proc is not None:
            others["server"] = psutil.Process(real.proc.pid)
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rnd in range(args.rounds):
            for output in outputs:
                for label, root in sides:
                    is_es = output in es_outputs
                    watched = {k: v for k, v in others.items() if k == "redis" or is_es}
                    shutil.rmtree(tmp / "data", ignore_errors=True)  # the sink's own state
                    shutil.rmtree(tmp / "out", ignore_errors=True)
                    if is_es and es_url:
                        urllib3.PoolManager().request("DELETE", es_url + f"/bench-{output}-*")
                    preload(client, keys, [] if args.rate else payloads, fill,
                                    args.partitions, output, args.wire)
                    feeder = threading.Thread(target=feed, args=(
                        url, keys, payloads, fill, args.wire, args.rate, per_entry,
                        args.burst)) \
                        if args.rate else None
                    result = run_sink(root, cfg, url, output, client, keys, args.partitions,
                                      total, watched, feeder)
                    check(output, tmp, total, real, es_url)
                    results.setdefault((output, label), []).append(result)
                    report(f"{label} #{rnd + 1} " if len(sides) > 1 or args.rounds > 1 else "",
                           result)
        if len(sides) > 1 or args.rounds > 1:
            for output in outputs:
                summary({label: results[(output, label)] for label, _ in sides})
    finally:
        if len(sides) > 1:
            from bench.e2e import drop_worktree

            drop_worktree(sides[0][1])
        if es_proc is not None:
            es_proc.terminate()
            es_proc.wait(timeout=30)
        if real is not None:
            real.stop()
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def check(output: str, tmp: Path, total: int, real: Any, es_url: str) -> None:
    """Every record delivered, once."""
    if output == "file":
        with open(tmp / "out" / "all.log", "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        assert lines == total, f"file has {lines} lines, expected {total}"
        return
    if real is not None:
        real.call("POST", f"/bench-{output}-*/_refresh")
    body = urllib3.PoolManager().request("GET", es_url + f"/bench-{output}-*/_count").data
    count = int(json.loads(body)["count"])
    assert count == total, f"server holds {count} documents, expected {total}"


if __name__ == "__main__":
    main()

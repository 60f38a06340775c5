"""Sink throughput: records preloaded in Redis, then the file sink and the es sink alone.

    python bench/sinks.py            # 1,000,000 records
    python bench/sinks.py --quick    # 100,000 records
    python bench/sinks.py --only es --records 300000 --workers 2 --batch-docs 5000
    python bench/sinks.py --only es --server es8 --records 200000 --es-runs 1x5000,2x1000

It starts its own redis-server (append-only, fsync every second, as the embedded broker),
writes the records into the ``out`` streams as processors would (entries of
``--per-entry`` parsed nginx records over ``--partitions`` partitions), then runs one real
``tailrace sink --output NAME`` process per output until its group has acknowledged every
entry. The es sink writes to ``tests/esserver.py`` (a separate process on the same
machine), or with ``--server es8`` (``os2``, ``os3``) to a real Elasticsearch/OpenSearch
(``tests/esreal.py``: fetched once, started here with ``-Xms512m -Xmx1g``, stopped at the
end; its CPU is the server JVM's and its launcher's). Printed per output: lines/s (from
the first delivery to the last ack, and with process start-up), CPU seconds of the sink per
million lines, its peak RSS, and the CPU split between sink, server and Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis
import urllib3
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tailrace.broker import ensure_groups, ensure_partition_count  # noqa: E402
from tailrace.embedded import redis_server_binary  # noqa: E402
from tailrace.keys import Keys, sink_group  # noqa: E402
from tailrace.wire import encode_processed, encode_records  # noqa: E402

PREFIX = "bench"
BASE_TIME = 1_700_000_000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def records(start: int, n: int) -> list[dict[str, Any]]:
    """Records shaped like the nginx parser's output, with agent metadata."""
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


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--logfile", str(tmp / "redis.log")], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    client.close()
    return proc, url


def preload(client: redis.Redis, keys: Keys, total: int, per_entry: int, partitions: int,
            outputs: list[str], wire: int = 2) -> None:
    """``out`` entries as processors write them (wire ``2``), or as older ones did (``1``)."""
    ensure_partition_count(client, keys, partitions)
    ensure_groups(client, keys, partitions, [sink_group(o) for o in outputs])
    pipe = client.pipeline(transaction=False)
    for n, start in enumerate(range(0, total, per_entry)):
        batch = records(start, min(per_entry, total - start))
        payload = encode_processed(batch) if wire == 2 else encode_records(batch)
        pipe.xadd(keys.out(n % partitions), {"v": str(wire), "b": payload})
        if n % 50 == 49:
            pipe.execute()
    pipe.execute()


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


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of ``proc`` and of its live children (a server JVM under its launcher)."""
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def run_sink(cfg: Path, url: str, output: str, client: redis.Redis, keys: Keys,
             partitions: int, total: int, others: dict[str, psutil.Process]) -> dict[str, Any]:
    before = {name: cpu_s(p) for name, p in others.items()}
    env = dict(os.environ, TAILRACE_BROKER=url)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tailrace", "sink", "-c", str(cfg),
                             "--output", output, "--log-level", "warning"], env=env, cwd=ROOT)
    ps = psutil.Process(proc.pid)
    t_first = None
    while True:
        started, done = group_state(client, keys, output, partitions)
        now = time.monotonic()
        if started and t_first is None:
            t_first = now
        if done:
            break
        if proc.poll() is not None:
            raise SystemExit(f"the {output} sink exited early with {proc.returncode}")
        time.sleep(0.02)
    t_done = time.monotonic()
    sink_cpu = cpu_s(ps)
    rss = peak_rss_mib(proc.pid)
    proc.terminate()
    proc.wait(timeout=60)
    used = {name: cpu_s(p) - before[name] for name, p in others.items()}
    steady = t_done - (t_first or t0)
    return {"output": output, "records": total, "seconds": t_done - t0, "steady_s": steady,
            "lines_per_s": total / steady, "lines_per_s_with_startup": total / (t_done - t0),
            "sink_cpu_s": sink_cpu, "cpu_s_per_million": sink_cpu / total * 1e6,
            "peak_rss_mib": rss, **{f"{k}_cpu_s": v for k, v in used.items()}}


def report(r: dict[str, Any]) -> None:
    parts = {"sink": r["sink_cpu_s"], **{k[:-6]: v for k, v in r.items()
                                         if k.endswith("_cpu_s") and k != "sink_cpu_s"}}
    total_cpu = sum(parts.values()) or 1.0
    split = ", ".join(f"{k} {v:.2f}s ({v / total_cpu:.0%})" for k, v in parts.items())
    print(f"{r['output']:>5}: {r['records']:,} lines in {r['steady_s']:.2f}s = "
          f"{r['lines_per_s']:,.0f} lines/s ({r['lines_per_s_with_startup']:,.0f} with "
          f"start-up, {r['seconds']:.2f}s); sink CPU {r['sink_cpu_s']:.2f}s = "
          f"{r['cpu_s_per_million']:.2f} s per million lines; peak RSS "
          f"{r['peak_rss_mib']:.0f} MiB; CPU split: {split}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 records.")
    ap.add_argument("--per-entry", type=int, default=1000, help="Records per stream entry.")
    ap.add_argument("--partitions", type=int, default=4)
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
    ap.add_argument("--wire", type=int, choices=[1, 2], default=2,
                    help="wire format of the preloaded entries (2: what processors write)")
    args = ap.parse_args()
    # SIGTERM runs the cleanup below too (a real server is a process group of its own).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    total = 100_000 if args.quick else args.records
    runs = [tuple(int(x) for x in run.split("x")) for run in args.es_runs.split(",") if run]
    runs = runs or [(args.workers, args.batch_docs)]
    # One es output (and group, and index) per run, so one server start serves them all.
    es_outputs = {f"es{i}-w{w}-b{b}" if len(runs) > 1 else "es": (w, b)
                  for i, (w, b) in enumerate(runs, 1)}
    outputs = ([] if args.only == "es" else ["file"]) + ([] if args.only == "file"
                                                          else list(es_outputs))
    tmp = Path(tempfile.mkdtemp(prefix="tailrace-bench-sinks-"))
    redis_proc, url = start_redis(tmp)
    es_proc = None
    real = None
    try:
        client = redis.Redis.from_url(url)
        keys = Keys(PREFIX)
        t = time.monotonic()
        preload(client, keys, total, args.per_entry, args.partitions, outputs, args.wire)
        print(f"preloaded {total:,} records ({client.info('memory')['used_memory_human']} in "
              f"Redis) in {time.monotonic() - t:.1f}s; {os.cpu_count()} CPUs", flush=True)
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
        for output in outputs:
            is_es = output in es_outputs
            watched = {k: v for k, v in others.items() if k == "redis" or is_es}
            result = run_sink(cfg, url, output, client, keys, args.partitions, total, watched)
            if output == "file":
                with open(tmp / "out" / "all.log", "rb") as f:
                    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                assert lines == total, f"file has {lines} lines, expected {total}"
            else:
                if real is not None:
                    real.call("POST", f"/bench-{output}-*/_refresh")
                body = urllib3.PoolManager().request(
                    "GET", es_url + f"/bench-{output}-*/_count").data
                count = int(json.loads(body)["count"])
                assert count == total, f"server holds {count} documents, expected {total}"
            report(result)
    finally:
        if es_proc is not None:
            es_proc.terminate()
            es_proc.wait(timeout=30)
        if real is not None:
            real.stop()
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

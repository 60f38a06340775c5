"""PRODUCE alone: the idempotent producer script with and without its memory check.

Starts its own redis-server (a temporary folder, AOF everysec, like the embedded default)
and times ``--calls`` PRODUCE calls of ``--payload`` bytes each, the two variants taking
turns for ``--rounds`` rounds (side by side, so machine noise hits both alike). Prints
the median microseconds per call and the implied lines/s ceiling of one agent connection
at ``--line-bytes`` per line.

    python bench/produce.py                     # 6 rounds of 300 calls of 160 KB
    python bench/produce.py --payload 262144 --rounds 10
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tailrace.broker import ensure_groups  # noqa: E402
from tailrace.embedded import EmbeddedRedis  # noqa: E402
from tailrace.keys import Keys  # noqa: E402
from tailrace.scriptcalls import Scripts  # noqa: E402

VARIANTS = {"no memory check": None, "memory check (INFO memory)": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--payload", type=int, default=160_000, help="bytes per batch")
    ap.add_argument("--line-bytes", type=int, default=110, help="for the lines/s figure")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tailrace-bench-produce-"))
    server = EmbeddedRedis(work / "data", "everysec").start()
    try:
        import redis

        client = redis.Redis.from_url(server.url)
        keys = Keys("bench")
        ensure_groups(client, keys, 1, [])
        scripts = Scripts(client, keys)
        payload = b"x" * args.payload
        offsets = dict.fromkeys(VARIANTS, 0)
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, limit in VARIANTS.items():
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    start = offsets[name]
                    scripts.produce(0, name, start, start + 10, payload, 0,
                                    memory_limit=limit)
                    offsets[name] = start + 10
                times[name].append((time.perf_counter() - t0) / args.calls * 1e6)
                client.xtrim(keys.raw(0), maxlen=0)  # keep the stream (and memory) small
        lines = args.payload / args.line_bytes
        print(f"PRODUCE of {args.payload:,} bytes (~{lines:,.0f} lines), {args.rounds} rounds "
              f"of {args.calls} calls, variants in turn:")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:<28} median {med:7.0f} µs per call  "
                  f"(~{lines / med * 1e6:,.0f} lines/s on one connection)")
        client.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

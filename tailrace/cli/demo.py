"""``tailrace demo``: generator + the whole pipeline + file output, with a live view.

Everything runs on this machine with an embedded Redis, in a fresh folder: a generator
writes Kubernetes-style CRI log files (with rotation), the agent tails them, a processor
parses them with the stock ``nginx`` parser, and the file output writes JSON lines. The
demo ends when every generated line has been delivered (or on Ctrl-C / the time limit)
and checks that each arrived exactly once.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click
import orjson
import redis

from ..embedded import EmbeddedRedis
from ..generate import Generator
from ..keys import Keys
from ..supervise import Supervisor
from .common import child_env, load
from .roles import agent_main, processor_main, sink_main
from .supervising import role_child

if TYPE_CHECKING:  # rich loads on use: the long-running roles never pay for it
    from rich.table import Table

__all__ = ["demo"]

DEMO_CONFIG = """\
# Written by `tailrace demo`. Try: tailrace config check -c {dir}/tailrace.yaml
service:
  data_dir: ./data
  partitions: 4
  publish_interval_s: 1   # the demo's table shows each worker's state every second
pipeline:
  inputs:
    - name: tail
      tag: 'kube.*'
      path: ./logs/*.log
      format: cri
      read_from_head: true
      refresh_interval_s: 0.5
  filters:
    - {{name: parser, match: 'kube.*', key: log, parser: nginx, reserve_data: true}}
    - {{name: modify, match: '*', set: {{cluster: demo}}}}
  outputs:
    - {{name: file, alias: demo-file, match: '*', path: ./out/access.log, format: json}}
"""

_PATH_RE = re.compile(rb'"path":"(/demo/\d+/\d+)"')


class _OutputCounter:
    """Counts delivered records (and duplicates) by the unique path in each line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.seen: set[bytes] = set()
        self.duplicates = 0
        self.lines = 0
        self._tail = b""

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        self.pos += len(data)
        data = self._tail + data
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        for line in data[:cut].splitlines():
            self.lines += 1
            m = _PATH_RE.search(line)
            if m is None:
                continue
            key = m.group(1)
            if key in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(key)


_AGENT_START_TIMEOUT_S = 30.0


def _await_agent(client: redis.Redis, keys: Keys, stop: threading.Event,
                 timeout_s: float) -> None:
    """Until the agent's record shows its first pass done (or a stop, or ``timeout_s``).

    The demo's log folder starts empty, so the agent's first pass ends ``idle``; ``active``
    is set just before that pass and does not say that the files were scanned yet."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        if any(w.get("role") == "agent" and w.get("state") == "idle"
               for w in _workers(client, keys)):
            return
        stop.wait(0.05)


def _workers(client: redis.Redis, keys: Keys) -> list[dict[str, object]]:
    out = []
    for key in client.scan_iter(match=keys.worker_pattern(), count=200):
        raw = client.get(key)
        if raw:
            out.append(orjson.loads(raw))
    return sorted(out, key=lambda w: (str(w.get("role")), str(w.get("id"))))


def _view(gen: Generator, counter: _OutputCounter, workers: list[dict[str, object]],
          elapsed: float, total: int) -> Table:
    from rich.table import Table

    table = Table(title=f"tailrace demo — {elapsed:5.1f}s", expand=False)
    table.add_column("worker")
    table.add_column("state")
    table.add_column("partitions")
    table.add_column("lines/s", justify="right")
    table.add_column("lines out", justify="right")
    for w in workers:
        counters = w.get("counters") or {}
        rates = w.get("rates") or {}
        parts = w.get("partitions") or {}
        assert isinstance(counters, dict) and isinstance(rates, dict) and isinstance(parts, dict)
        owned = ",".join(str(p) for ps in parts.values() for p in ps) or "-"
        table.add_row(f"{w.get('role')} {w.get('pid')}", str(w.get("state")), owned,
                      f"{rates.get('lines_out_per_s', 0):,.0f}",
                      f"{counters.get('lines_out', 0):,}")
    table.caption = (f"generated {gen.written:,}/{total:,} lines ({gen.rotations} rotations)"
                     f" · delivered {len(counter.seen):,} · duplicates {counter.duplicates}")
    return table


@click.command()
@click.option("--dir", "directory", default="./tailrace-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for logs, output and state "
              "(emptied first).")
@click.option("--lines", "total", default=100_000, show_default=True, help="Lines to generate.")
@click.option("--rate", default=20_000.0, show_default=True, help="Lines per second.")
@click.option("--files", default=4, show_default=True, help="Container log files.")
@click.option("--rotate-bytes", default=1024 * 1024, show_default=True,
              help="Rotate log files past this size.")
@click.option("--timeout", default=300.0, show_default=True, help="Give up after seconds.")
def demo(directory: str, total: int, rate: float, files: int, rotate_bytes: int,
         timeout: float) -> None:
    """Generator + pipeline + file output on an embedded Redis, with a live view."""
    from rich.console import Console
    from rich.live import Live

    root = Path(directory).resolve()
    for sub in ("logs", "out", "data"):
        shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    cfg_path = root / "tailrace.yaml"
    cfg_path.write_text(DEMO_CONFIG.format(dir=directory))
    config = load(str(cfg_path))
    console = Console(stderr=True)
    console.print(f"[bold]tailrace demo[/] in {root}: {total:,} nginx lines at {rate:,.0f}/s "
                  f"over {files} CRI files, rotated every {rotate_bytes:,} bytes")

    stop = threading.Event()
    interrupted = [False]

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        interrupted[0] = True
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    embedded = EmbeddedRedis(config.data_dir, "everysec").start()
    client = redis.Redis(unix_socket_path=str(embedded.socket))
    keys = Keys(config.service.prefix)
    children = [role_child("agent", "agent", config, "warning", None,
                           lambda: agent_main(config)),
                role_child("processor", "processor", config, "warning", None,
                           lambda: processor_main(config)),
                role_child("sink", "sink", config, "warning", None, lambda: sink_main(config))]
    sup = Supervisor(children, shutdown_timeout_s=20, env=child_env(embedded.url))
    sup_stop = threading.Event()
    sup.start(sup_stop)  # forked here, before this process starts a thread (supervise.py)
    sup_thread = threading.Thread(target=sup.run, args=(sup_stop,), daemon=True)
    gen = Generator(root / "logs", files=files, fmt="cri", rate=rate, total=total,
                    rotate_bytes=rotate_bytes)
    gen_thread = threading.Thread(target=gen.run, args=(stop,), daemon=True)
    counter = _OutputCounter(root / "out" / "access.log")
    start = time.monotonic()
    sup_thread.start()
    # The generator starts once the agent tails: lines it wrote to a file rotated away (past
    # the glob) before the agent's first scan would never be read, and the demo would report
    # a loss that is only its own start-up race (seen when the agent took > 1.4 s to start).
    _await_agent(client, keys, stop, _AGENT_START_TIMEOUT_S)
    gen_thread.start()
    ok = False
    elapsed = 0.0
    try:
        with Live(console=console, refresh_per_second=4) as live:
            while not stop.wait(0.5):
                counter.poll()
                elapsed = time.monotonic() - start
                live.update(_view(gen, counter, _workers(client, keys), elapsed, total))
                if len(counter.seen) >= total and gen.written >= total:
                    ok = True  # elapsed: until the last line was delivered (no shutdown)
                    break
                if elapsed > timeout:
                    console.print(f"[red]timed out after {timeout:.0f}s[/]")
                    break
    finally:
        stop.set()
        gen_thread.join()
        gen.close()
        sup_stop.set()
        sup_thread.join()
        client.close()
        embedded.stop()
    counter.poll()
    console.print()  # the live view's last frame may end without a newline
    exact = ok and counter.duplicates == 0 and counter.lines == total
    console.print(
        f"generated {gen.written:,} lines at up to {rate:,.0f}/s over {gen.rotations} "
        f"rotations · delivered {len(counter.seen):,} distinct in {elapsed:.1f}s · "
        f"{counter.duplicates} duplicates", soft_wrap=True,
    )
    console.print(f"output: {counter.path}")
    if exact:
        console.print("[green]every line arrived exactly once[/]")
        return
    if interrupted[0]:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    console.print("[red]mismatch: see the logs above[/]")
    sys.exit(1)

"""Operating commands: status (table, --json, --watch) and reload."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click
import orjson
import redis

from ..broker import BROKER_ERRORS, connect, redact_url
from ..config import Config
from ..embedded import EmbeddedRedis
from ..keys import Keys, sink_group
from ..redaction import scrub
from ..runtime import broker_url
from ..status import collect
from .common import broker_option, config_option, fail, load

if TYPE_CHECKING:  # rich loads on use: the long-running roles never pay for it
    from rich.console import Group
    from rich.table import Table

__all__ = ["reload", "status"]


def open_broker(config: Config, broker: str | None) -> redis.Redis:
    """A client for a running pipeline (never starts the embedded server)."""
    url = broker_url(config, broker)
    if url is None:
        emb = EmbeddedRedis(config.data_dir)
        if not emb._answers():  # noqa: SLF001 - a probe, not a start
            fail(f"no running pipeline: the embedded Redis of {config.data_dir} is not up "
                 "(start one with `tailrace run`, or pass --broker)")
        url = emb.url
    try:
        client = connect(url, name="tailrace-cli")
        client.ping()
    except BROKER_ERRORS as exc:
        fail(f"cannot reach the broker at {redact_url(url)}: {exc}")
    return client


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(doc: dict[str, Any]) -> Group:
    """The status document as rich tables: workers, lag per group, dead letters, files."""
    from rich.console import Group
    from rich.table import Table

    workers = Table(title="workers", title_justify="left", expand=False)
    for col in ("role", "host", "pid", "state", "partitions", "lines/s", "lines out", "errors",
                "dead letters", "heartbeat"):
        workers.add_column(col, justify="right" if col in ("pid", "lines/s", "lines out",
                                                           "errors", "dead letters") else "left")
    for w in doc["workers"]:
        counters = w.get("counters") or {}
        rates = w.get("rates") or {}
        owned_map = w.get("partitions") or {}
        owned = " ".join(f"{g}:{','.join(map(str, ps))}" for g, ps in owned_map.items()
                         if ps) or "-"
        state = str(w.get("state"))
        color = {"active": "green", "idle": "cyan", "throttled": "yellow",
                 "broker_down": "red", "failed": "red"}.get(state, "white")
        workers.add_row(
            str(w.get("role")), str(w.get("host")), str(w.get("pid")), f"[{color}]{state}[/]",
            owned, f"{rates.get('lines_out_per_s', 0):,.0f}",
            f"{counters.get('lines_out', 0):,}", f"{counters.get('errors', 0):,}",
            f"{counters.get('dead_letters', 0):,}", _age(w.get("heartbeat_age_s")))
    lag = Table(title="consumer groups (lag = entries not yet acknowledged)",
                title_justify="left")
    lag.add_column("group")
    lag.add_column("stream")
    lag.add_column("lag", justify="right")
    lag.add_column("pending", justify="right")
    lag.add_column("oldest pending", justify="right")
    lag.add_column("lag per partition")
    for name, g in sorted(doc["groups"].items()):
        oldest = max((p["oldest_pending_age_s"] or 0 for p in g["partitions"]), default=0)
        per = " ".join(f"{p['partition']}:{p['lag']}" for p in g["partitions"])
        label = name if g.get("configured", True) else f"{name} (not in config)"
        lag.add_row(label, g["stream"], f"{g['lag']:,}", f"{g['pending']:,}",
                    _age(oldest or None), per)
    parts: list[Any] = [workers, lag]
    if doc.get("nodes"):
        parts.append(_nodes_table(doc["nodes"]))
    dl = doc["dead_letters"]
    parts.append(f"dead letters: {dl['total']:,}" + (
        "  (" + " ".join(f"p{p}:{n}" for p, n in dl["partitions"].items()) + ")  "
        "see `tailrace dlq list`" if dl["total"] else ""))
    for a in doc.get("agents", []):
        if "files_total" in a:
            parts.append(f"agent {a.get('host')}: {a['files_total']:,} files followed "
                         f"({a.get('files_open', 0):,} open), {a.get('bytes_behind', 0):,} "
                         "bytes not yet committed")
    files = [(a, f) for a in doc.get("agents", []) for f in a.get("files") or []]
    if files:
        ft = Table(title="agent files (most behind first)", title_justify="left")
        for col in ("agent", "path", "partition", "offset", "size", "behind", "state"):
            ft.add_column(col)
        for a, f in files:
            ft.add_row(str(a.get("host")), str(f.get("path")), str(f.get("partition", "-")),
                       f"{f.get('offset', 0):,}", f"{f.get('size', 0):,}",
                       f"{f.get('behind', 0):,}", str(f.get("state", "")))
        parts.append(ft)
    return Group(*parts)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _nodes_table(nodes: list[dict[str, Any]]) -> Table:
    """Redis masters: which partitions each serves, its memory and replicas."""
    from rich.table import Table

    table = Table(title="broker nodes (partitions per Redis master)", title_justify="left")
    for col in ("node", "role", "partitions", "memory", "maxmemory", "replicas"):
        table.add_column(col, justify="right" if col in ("memory", "maxmemory", "replicas")
                         else "left")
    for n in nodes:
        parts = n.get("partitions") or []
        table.add_row(str(n.get("node")), str(n.get("role")),
                      ",".join(map(str, parts)) or "-", _bytes(int(n.get("used_memory", 0))),
                      _bytes(int(n["maxmemory"])) if n.get("maxmemory") else "-",
                      str(n.get("replicas", 0)))
    return table


@click.command()
@config_option
@broker_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--watch", is_flag=True, help="Refresh in place every --interval seconds (off a "
              "terminal: print one frame per interval; --json: one JSON document per line).")
@click.option("--interval", default=2.0, show_default=True, help="Refresh period for --watch.")
def status(config_path: str, broker: str | None, as_json: bool, watch: bool,
           interval: float) -> None:
    """Workers, states, throughput, lag per group and partition, dead letters."""
    from rich.console import Console
    from rich.live import Live

    config = load(config_path)
    client = open_broker(config, broker)
    keys = Keys(config.service.prefix)
    groups = [sink_group(o.id) for o in config.outputs]

    def snapshot() -> dict[str, Any]:
        return collect(client, keys, config.service.partitions, groups)

    if as_json and not watch:
        sys.stdout.buffer.write(orjson.dumps(snapshot(), option=orjson.OPT_INDENT_2) + b"\n")
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped or captured: do not squeeze the tables to 80
    if not watch:
        console.print(render(snapshot()))
        return
    stop = _stop_on_signals()
    try:
        if console.is_terminal:
            with Live(console=console, refresh_per_second=4, screen=False) as live:
                while not stop.is_set():
                    doc = snapshot()
                    if as_json:
                        live.update(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
                    else:
                        live.update(render(doc))
                    stop.wait(interval)
        else:
            _watch_frames(console, snapshot, as_json, interval, stop)
    except (KeyboardInterrupt, BrokenPipeError):
        pass  # stopped, or the reader of the pipe went away: both are a normal end


def _stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set: `status --watch` ends with exit 0 on either."""
    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _watch_frames(console: Any, snapshot: Any, as_json: bool, interval: float,
                  stop: threading.Event) -> None:
    """Off a terminal (a pipe, a file, `timeout`): one whole frame per interval, flushed,
    so every frame is there to read even when the command is stopped."""
    out = sys.stdout
    while not stop.is_set():
        try:
            doc = snapshot()
        except BROKER_ERRORS as exc:
            doc = None
            out.write(scrub(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} broker "
                            f"unreachable: {exc}; retrying\n"))
        if doc is not None and as_json:
            out.write(orjson.dumps(doc).decode() + "\n")
        elif doc is not None:
            out.write(f"# status at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
            out.flush()
            console.print(render(doc))
        out.flush()
        stop.wait(interval)


@click.command()
@config_option
@broker_option
def reload(config_path: str, broker: str | None) -> None:
    """Validate the config, then ask every worker of the pipeline to reload it.

    Workers drain, commit and restart in place with the new config; a worker whose own
    copy of the config is invalid keeps running the old one and logs why.
    """
    config = load(config_path)
    client = open_broker(config, broker)
    gen = client.incr(Keys(config.service.prefix).reload())
    click.echo(f"reload requested (generation {gen}); workers pick it up within a second")

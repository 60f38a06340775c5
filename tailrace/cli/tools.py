"""Short commands: config check, parse, generate."""

from __future__ import annotations

import signal
import sys
import threading
import time

import click
import orjson
import yaml

from ..generate import Generator
from .common import config_option, fail, load

__all__ = ["config_group", "generate", "parse"]


@click.group("config")
def config_group() -> None:
    """Work with pipeline configs."""


@config_group.command("check")
@config_option
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when the config is valid.")
def check(config_path: str, quiet: bool) -> None:
    """Validate a config and print the resolved pipeline (exit 2 on errors)."""
    config = load(config_path)
    if not quiet:
        click.echo(yaml.safe_dump(config.to_dict(), sort_keys=False, width=100), nl=False)
        click.echo(f"# {config_path}: valid ({len(config.inputs)} inputs, "
                   f"{len(config.filters)} filters, {len(config.outputs)} outputs)", err=True)


@click.command()
@click.option("-c", "--config", "config_path", default=None, type=click.Path(dir_okay=False),
              envvar="TAILRACE_CONFIG",
              help="Pipeline config whose parsers: to use (none: the stock parsers only).")
@click.option("--parser", "parser_name", required=True, help="Parser name (config or stock).")
def parse(config_path: str | None, parser_name: str) -> None:
    """Parse lines from stdin with a parser; print one JSON record per line.

    Exits 1 when a line did not parse (it is printed with an ``error``) or its time did
    not fit the parser's ``time_format`` (printed parsed, flagged with ``time_error``).
    """
    from processors.chain import build_parsers
    from processors.parsers.base import TIME_ERROR_KEY, ParseFailure
    from processors.safe_regex import WATCHDOG

    from ..config import parse_config
    from .registry import build_registry

    config = load(config_path) if config_path else parse_config("{}", "<none>", build_registry())
    parsers = build_parsers(config)
    parser = parsers.get(parser_name)
    if parser is None:
        fail(f"unknown parser {parser_name!r}; known: {', '.join(sorted(parsers))}", 2)
    out = sys.stdout.buffer
    failures = 0
    for n, raw in enumerate(sys.stdin.buffer, 1):
        text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        errors = parser.time_errors
        try:
            with WATCHDOG.armed():  # a backtracking regex gives up after its budget
                fields, t = parser.parse(text)
        except ParseFailure as exc:
            failures += 1
            click.echo(f"line {n}: {exc}", err=True)
            out.write(orjson.dumps({"log": text, "error": str(exc)}) + b"\n")
            continue
        if parser.time_errors != errors:
            failures += 1
            click.echo(f"line {n}: {fields.get(TIME_ERROR_KEY)}", err=True)
        rec = {"time": t if t is not None else time.time(), **fields}
        out.write(orjson.dumps(rec, default=str) + b"\n")
    out.flush()
    if failures:
        sys.exit(1)


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--rate", default=1000.0, show_default=True, help="Lines per second (0: max).")
@click.option("--format", "fmt", type=click.Choice(["cri", "plain", "json"]), default="cri",
              show_default=True, help="cri (containerd), json (docker json-file) or plain.")
@click.option("--rotate-bytes", type=int, default=None, help="Rotate files past this size.")
@click.option("--files", default=4, show_default=True, help="Number of container log files.")
@click.option("--lines", "total", type=int, default=None, help="Stop after this many lines.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def generate(directory: str, rate: float, fmt: str, rotate_bytes: int | None, files: int,
             total: int | None, duration: float | None) -> None:
    """Write Kubernetes-style container log files (nginx lines), with rotation."""
    gen = Generator(directory, files=files, fmt=fmt, rate=rate, total=total,
                    rotate_bytes=rotate_bytes)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _s, _f: stop.set())
    timer = threading.Timer(duration, stop.set) if duration is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        n = gen.run(stop)
    finally:
        stop.set()
        gen.close()
    click.echo(f"wrote {n} lines to {directory} ({gen.rotations} rotations)", err=True)

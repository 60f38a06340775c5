"""``tailrace dlq``: list, show, replay and purge dead letters.

Entries are named ``P/ID`` (partition and stream id, as ``dlq list`` prints them). Replay
runs as RQ jobs (see :mod:`sinks.replay`): by default this command enqueues them and works
them off right here; ``--enqueue-only`` leaves them to ``tailrace worker``. Running the same
replay again resumes it: what was replayed is never replayed twice.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

import click
import orjson

from ..keys import Keys
from .common import EXIT_CONFIG, broker_option, config_option, fail, load
from .ops import open_broker

__all__ = ["dlq", "parse_when"]

_REL_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: float | None = None) -> int:
    """A time as epoch milliseconds: ``90m``/``2h``/``7d`` ago, ISO 8601, or epoch seconds.

    Raises:
        click.BadParameter: none of those.
    """
    now = time.time() if now is None else now
    value = text.strip()
    m = _REL_RE.match(value)
    if m:
        return int((now - float(m.group(1)) * _UNIT_S[m.group(2)]) * 1000)
    if re.fullmatch(r"\d{9,11}(\.\d+)?", value):
        return int(float(value) * 1000)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: use 30m, 2h, 7d (ago), 2024-01-02T03:04:05Z or epoch "
            "seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000)) if ms else "-"


def _selection_options(f: Any) -> Any:
    f = click.option("--plugin", default=None, help="Only entries of this plugin (or output).")(f)
    f = click.option("--stage", default=None,
                     help="Only entries of this stage: processor, processors, sink:NAME.")(f)
    f = click.option("--until", default=None, help="Entries up to this time (2h, ISO 8601).")(f)
    f = click.option("--since", default=None, help="Entries from this time (2h, ISO 8601).")(f)
    f = click.option("--partition", "partitions", type=int, multiple=True,
                     help="Only this partition (repeat the option).")(f)
    return f


def _open(config_path: str, broker: str | None) -> tuple[Any, Any, Any]:
    from sinks.dlq import DeadLetterStore

    config = load(config_path)
    client = open_broker(config, broker)
    keys = Keys(config.service.prefix)
    return config, client, DeadLetterStore(client, keys, config.service.partitions)


def _selection(partitions: tuple[int, ...], since: str | None, until: str | None,
               stage: str | None, plugin: str | None, n_partitions: int) -> Any:
    from sinks.dlq import Selection

    for p in partitions:
        if not 0 <= p < n_partitions:
            raise click.BadParameter(f"partition {p} does not exist (0..{n_partitions - 1})",
                                     param_hint="--partition")
    return Selection(tuple(partitions), None if since is None else parse_when(since),
                     None if until is None else parse_when(until), stage, plugin)


@click.group("dlq")
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


@dlq.command("list")
@config_option
@broker_option
@_selection_options
@click.option("--limit", default=50, show_default=True, help="Newest entries to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(config_path: str, broker: str | None, partitions: tuple[int, ...], since: str | None,
          until: str | None, stage: str | None, plugin: str | None, limit: int,
          as_json: bool) -> None:
    """The newest dead letters, with their stage, plugin and error."""
    config, client, store = _open(config_path, broker)
    sel = _selection(partitions, since, until, stage, plugin, config.service.partitions)
    entries = store.latest(sel, limit)
    if as_json:
        for e in entries:
            click.echo(orjson.dumps({
                "ref": e.ref, "time": _iso(e.time_ms), "kind": e.kind, "stage": e.stage,
                "plugin": e.plugin, "size": e.size(), "error": e.error, "source": e.source,
                "replayed": e.replayed}).decode())
        return
    counts = store.counts()
    per = ", ".join(f"p{p}: {n}" for p, n in counts.items() if n) or "none"
    click.echo(f"dead letters: {sum(counts.values())} ({per}) in {config.file}")
    for e in entries:
        replayed = ""
        if e.replayed is not None:
            parts = e.replayed.split(" ")
            replayed = f"  replayed to {parts[0]}" + (f" for {parts[2]}" if parts[2:3] != [""]
                                                       and len(parts) > 3 else "")
        click.echo(f"{e.ref}  {_iso(e.time_ms)}  {e.stage}  {e.plugin or '-'}  "
                   f"{e.kind} x{e.size()}{replayed}")
        click.echo(f"    {e.error[:500]}")
    if not entries:
        click.echo("no dead letters match")


@dlq.command("show")
@config_option
@broker_option
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="The entry as one JSON object.")
def show(config_path: str, broker: str | None, ref: str, as_json: bool) -> None:
    """One dead letter: where it came from, why, and its records (or raw lines)."""
    _, _, store = _open(config_path, broker)
    try:
        entry = store.get(ref)
    except ValueError:
        fail(f"{ref!r} is not a dead-letter reference: use P/ID as `dlq list` prints it",
             EXIT_CONFIG)
    if entry is None:
        fail(f"no dead letter {ref} (purged? see `tailrace dlq list`)")
    batch = entry.raw_batch() if entry.kind == "raw" else None
    records = entry.records() if entry.kind != "raw" else []
    head = {"ref": entry.ref, "time": _iso(entry.time_ms), "kind": entry.kind,
            "stage": entry.stage, "plugin": entry.plugin, "source": entry.source,
            "error": entry.error, "replayed": entry.replayed}
    if as_json:
        doc: dict[str, Any] = dict(head)
        if batch is not None:
            doc["batch"] = {"agent": batch.agent, "path": batch.path, "file": batch.file,
                            "start": batch.start, "end": batch.end,
                            "lines": [x.decode("utf-8", "replace") for x in batch.lines]}
        else:
            doc["records"] = records
        click.echo(orjson.dumps(doc, default=str).decode())
        return
    for k, v in head.items():
        click.echo(f"{k + ':':10} {v if v is not None else '-'}")
    if batch is not None:
        click.echo(f"{'batch:':10} {batch.path} bytes {batch.start}..{batch.end} "
                   f"({len(batch.lines)} lines, agent {batch.agent})")
        for offset, line in zip(batch.offsets, batch.lines, strict=True):
            click.echo(f"  @{offset}: {line.decode('utf-8', 'replace')}")
    elif entry.kind == "raw":
        click.echo(f"payload:   {len(entry.payload)} bytes that do not decode as a raw batch")
    else:
        click.echo(f"records:   {len(records)}")
        for rec in records:
            click.echo("  " + orjson.dumps(rec, default=str).decode())


@dlq.command("replay")
@config_option
@broker_option
@_selection_options
@click.option("--output", default=None, help="Deliver the records to this output only "
              "(default: the output that refused them; records a processor refused go to "
              "every output).")
@click.option("--chunk", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Dead letters per RQ job.")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed, change nothing.")
@click.option("--enqueue-only", is_flag=True,
              help="Only enqueue the jobs (for `tailrace worker`); do not run them here.")
def replay(config_path: str, broker: str | None, partitions: tuple[int, ...],
           since: str | None, until: str | None, stage: str | None, plugin: str | None,
           output: str | None, chunk: int, dry_run: bool, enqueue_only: bool) -> None:
    """Put dead letters back into the pipeline, each exactly once, as RQ jobs."""
    from sinks.replay import enqueue, new_run_id, plan

    config, client, store = _open(config_path, broker)
    if output is not None:
        try:
            config.output(output)
        except KeyError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="--output") from None
    sel = _selection(partitions, since, until, stage, plugin, config.service.partitions)
    work = plan(store, sel, output=output, chunk=chunk, outputs=[o.id for o in config.outputs])
    click.echo(f"{work.total} dead letters to replay in {len(work.chunks)} jobs"
               + (f"; {work.already} replayed before (skipped)" if work.already else "")
               + (f"; {work.raw_skipped} raw batches left out: they go back through the "
                  "processors to every output, so replay them without --output"
                  if work.raw_skipped else "")
               + ("; left out, refused by outputs no longer configured: " + ", ".join(
                   f"{n} of {name}" for name, n in sorted(work.orphaned.items()))
                  + " (replay them with --output NAME)" if work.orphaned else ""))
    if dry_run or not work.chunks:
        return
    keys = Keys(config.service.prefix)
    run = new_run_id()
    described = " ".join(a for a in sys.argv[2:] if a not in ("-c", config_path))
    jobs = enqueue(client, keys, work, run=run, output=output, description=described,
                   backlog_limit=config.service.backlog.max_entries_per_partition)
    click.echo(f"run {run}: {len(jobs)} jobs on queue {keys.queue('replay')}")
    if enqueue_only:
        click.echo(f"run them with: tailrace worker -c {config_path} --queue replay "
                   f"(progress: tailrace dlq runs -c {config_path} {run})")
        return
    _work_here(client, keys, run, work.total)


def _work_here(client: Any, keys: Keys, run: str, total: int) -> None:
    """Run the replay queue in this process (an RQ burst worker), with a progress bar."""
    from rich.console import Console  # loaded on use: long-running roles never need it
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rq import Queue, SimpleWorker

    from sinks.replay import run_progress

    worker = SimpleWorker([Queue(keys.queue("replay"), connection=client)], connection=client)
    done = threading.Event()
    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replay", total=total)

        def watch() -> None:
            while not done.wait(0.2):
                doc = run_progress(client, keys, run) or {}
                bar.update(task, completed=doc.get("done", 0))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
        finally:
            done.set()
            watcher.join()
    doc = run_progress(client, keys, run) or {}
    click.echo(f"run {run}: {doc.get('replayed', 0)} replayed, {doc.get('already', 0)} "
               f"already replayed, {doc.get('gone', 0)} gone (purged meanwhile); "
               f"{doc.get('jobs_done', 0)}/{doc.get('jobs', 0)} jobs done")
    if doc.get("jobs_done", 0) < doc.get("jobs", 0):
        fail(f"some jobs of run {run} did not finish (see `rq info` and the failed job "
             "registry); run the same command again to resume: replayed entries are skipped")


@dlq.command("runs")
@config_option
@broker_option
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
def runs(config_path: str, broker: str | None, run: str | None, as_json: bool) -> None:
    """Progress of replay runs (the last 7 days)."""
    from sinks.replay import run_progress

    config, client, _ = _open(config_path, broker)
    keys = Keys(config.service.prefix)
    names = [run] if run else sorted(
        k.decode().rsplit(":", 1)[1] for k in client.scan_iter(match=keys.replay_run_pattern()))
    docs = [d for d in (run_progress(client, keys, n) for n in names) if d]
    if run and not docs:
        fail(f"no replay run {run} (runs are kept 7 days)")
    for d in docs:
        if as_json:
            click.echo(orjson.dumps(d).decode())
        else:
            click.echo(f"{d['run']}: {d.get('done', 0)}/{d.get('total', 0)} done "
                       f"({d.get('replayed', 0)} replayed, {d.get('already', 0)} already, "
                       f"{d.get('gone', 0)} gone), jobs {d.get('jobs_done', 0)}/"
                       f"{d.get('jobs', 0)}, output {d.get('output') or '(as refused)'}")


@dlq.command("purge")
@config_option
@broker_option
@_selection_options
@click.option("--replayed", "only_replayed", is_flag=True,
              help="Only entries that were replayed already.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(config_path: str, broker: str | None, partitions: tuple[int, ...],
          since: str | None, until: str | None, stage: str | None, plugin: str | None,
          only_replayed: bool, yes: bool) -> None:
    """Delete dead letters (all, or the selected ones)."""
    config, _, store = _open(config_path, broker)
    sel = _selection(partitions, since, until, stage, plugin, config.service.partitions)
    if not yes:
        what = "the selected" if (partitions or since or until or stage or plugin) else "ALL"
        click.confirm(f"delete {what} dead letters{' that were replayed' if only_replayed else ''}"
                      f" of {config.file}?", abort=True)
    n = store.purge(sel, only_replayed=only_replayed)
    click.echo(f"purged {n} dead letters")

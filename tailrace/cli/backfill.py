"""``tailrace backfill``: old log files (plain or gzip) into the pipeline, as RQ jobs.

One job per file, in the pipeline's ``backfill`` queue; ``tailrace worker`` runs them (on
any host that can read the files). Each job feeds the raw streams through the idempotent
producer under the file's own identity (:mod:`edge_agent.backfill`), so the same backfill
run twice adds nothing and an interrupted one resumes where it stopped.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import load_config
from ..keys import Keys
from .common import broker_option, config_option, fail, load
from .ops import open_broker
from .registry import build_registry

if TYPE_CHECKING:  # rich loads on use: the long-running roles never pay for it
    from rich.console import Console

__all__ = ["backfill", "backfill_job"]

JOB_TIMEOUT_S = 6 * 3600
PROGRESS_SAVE_S = 0.5


def backfill_job(config_path: str, path: str, input_id: str) -> dict[str, Any]:
    """The RQ job: backfill one file; progress in ``job.meta`` (``done``, ``total`` bytes)."""
    from rq import get_current_job

    from edge_agent.backfill import backfill_file
    from edge_agent.tail import TailOptions

    job: Any = get_current_job()
    if job is None:
        raise RuntimeError("backfill_job runs inside an RQ worker (tailrace worker)")
    config = load_config(config_path, build_registry())
    pc = next((i for i in config.inputs if i.id == input_id), None)
    if pc is None:
        raise ValueError(f"{config_path} has no input {input_id!r} any more")
    if not isinstance(pc.options, TailOptions):
        raise ValueError(f"{config_path}: input {input_id!r} is not a file input (tail)")
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_SAVE_S or done >= total:
            last[0] = now
            job.meta.update(done=done, total=total)
            job.save_meta()

    result = backfill_file(
        job.connection, Keys(config.service.prefix), pc.options, path=path,
        agent=config.service.agent_name, input_id=pc.id,
        partitions=config.service.partitions, base_dir=config.base_dir,
        data_dir=config.data_dir,  # the agent's checkpoint tells a rotated copy it read
        backlog_limit=config.service.backlog.max_entries_per_partition,
        memory_limit=config.service.backlog.max_redis_memory, progress=progress,
    )
    return asdict(result)


@click.command()
@config_option
@broker_option
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--input", "input_id", default=None,
              help="The tail input whose options (format, tag, multiline) apply; "
              "default: the first one.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Show progress until the jobs are done.")
def backfill(config_path: str, broker: str | None, paths: tuple[str, ...],
             input_id: str | None, wait: bool) -> None:
    """Enqueue one backfill job per file (plain or gzip); running it twice adds nothing."""
    from rich.console import Console
    from rq import Queue, SimpleWorker, Worker

    config = load(config_path)
    inputs = [i for i in config.inputs if i.name == "tail"]
    if not inputs:
        fail(f"{config_path} has no tail input whose options a backfill could use", 2)
    pc = inputs[0] if input_id is None else next((i for i in inputs if i.id == input_id), None)
    if pc is None:
        fail(f"no tail input {input_id!r}; known: {', '.join(i.id for i in inputs)}", 2)
    client = open_broker(config, broker)
    queue = Queue(Keys(config.service.prefix).queue("backfill"), connection=client)
    cfg = str(Path(config.file).resolve())
    jobs: list[Any] = [queue.enqueue(backfill_job, cfg, str(Path(p).resolve()), pc.id,
                          job_timeout=JOB_TIMEOUT_S, result_ttl=7 * 86400,
                          description=f"backfill {p}") for p in paths]
    console = Console(stderr=True)
    console.print(f"enqueued {len(jobs)} backfill job(s) on queue {queue.name}")
    if not wait:
        for job in jobs:
            click.echo(job.id)
        return
    done = threading.Event()
    poller = threading.Thread(target=_show_progress, args=(jobs, done, console), daemon=True)
    poller.start()
    if not Worker.all(queue=queue):
        console.print("no `tailrace worker` serves this queue: running the jobs here")
        SimpleWorker([queue], connection=client).work(burst=True, logging_level="WARNING")
    poller.join()
    failed = 0
    for job in jobs:
        job.refresh()
        r: Any = job.return_value() if job.is_finished else None
        if isinstance(r, dict):
            console.print(_summary(r), soft_wrap=True)
        else:
            failed += 1
            latest = job.latest_result()
            info = latest.exc_string if latest is not None else ""
            console.print(f"[red]{job.description}: {job.get_status()}[/]\n{info or ''}")
    if failed:
        raise SystemExit(1)


def _summary(r: dict[str, Any]) -> str:
    """One job's result in words (BackfillResult.summary, from the job's returned dict)."""
    from edge_agent.backfill import BackfillResult

    known = {k: v for k, v in r.items() if k in BackfillResult.__dataclass_fields__}
    return BackfillResult(**known).summary()


def _show_progress(jobs: list[Any], done: threading.Event, console: Console) -> None:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        tasks = {job.id: bar.add_task(Path(job.args[1]).name, total=None) for job in jobs}
        while True:
            finished = 0
            for job in jobs:
                job.refresh()
                meta = job.get_meta(refresh=False)
                if "total" in meta:
                    bar.update(tasks[job.id], completed=meta["done"], total=meta["total"])
                if job.is_finished or job.is_failed or job.is_stopped or job.is_canceled:
                    finished += 1
                    t = bar.tasks[tasks[job.id]].total
                    if job.is_finished and t:  # the file's size, once the job reported it
                        bar.update(tasks[job.id], completed=t, total=t)
            if finished == len(jobs):
                done.set()
                return
            time.sleep(0.3)

"""Background jobs on RQ: ``tailrace worker`` runs them (backfill, dead-letter replay).

Jobs live in the pipeline's Redis under RQ's own keys, in queues named per pipeline
(:meth:`tailrace.keys.Keys.queue`), so a large backfill or replay is visible
(``rq info``), resumable and retried, and any number of workers on any host share it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from ..keys import Keys
from ..signals import StopSignals, hold
from ..supervise import Child
from ..topology import is_cluster
from .common import broker_option, config_option, fail, init_logging, load, log_options
from .ops import open_broker

__all__ = ["JOB_QUEUES", "worker"]

JOB_QUEUES = ("backfill", "replay")


@click.command()
@config_option
@broker_option
@click.option("--queue", "queues", multiple=True, default=JOB_QUEUES, show_default=True,
              help="Job queue(s) to serve (repeat the option).")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes on this machine.")
@log_options
def worker(config_path: str, broker: str | None, queues: tuple[str, ...], burst: bool,
           workers: int, log_level: str | None, log_format: str | None) -> None:
    """Run RQ workers for backfill and dead-letter replay jobs."""
    started = StopSignals(lambda _s: None, name="worker")
    hold()  # a stop while starting up is kept, and RQ's worker told at once (below)
    from rq import Queue, Worker

    config = load(config_path)
    init_logging(config, "worker", log_level, log_format)
    if workers > 1:
        from .roles import supervise

        args = ["worker", "-c", config.file, *[a for q in queues for a in ("--queue", q)]]
        if burst:
            args.append("--burst")
        children = [Child(f"worker-{i}", list(args)) for i in range(workers)]
        sys.exit(supervise(config, broker, children))
    client = open_broker(config, broker)
    if is_cluster(client):
        fail("tailrace worker runs RQ jobs, and RQ does not support Redis Cluster (its "
             "transactions span keys in different slots); point --broker at a single Redis "
             "or a Sentinel deployment for backfill and replay jobs")
    keys = Keys(config.service.prefix)
    rq_queues = [Queue(keys.queue(q), connection=client) for q in queues]
    started.install()
    w = _worker_class(Worker, started)(rq_queues, connection=client)
    level = (log_level or config.service.log_level).upper()
    ok = w.work(burst=burst, logging_level=level, with_scheduler=False)
    logging.getLogger(__name__).info("worker stopped (%s)", "jobs done" if ok else "idle")


def _worker_class(base: type[Any], started: StopSignals) -> type[Any]:
    """RQ's worker, told of a stop that arrived before its own handlers were installed."""

    class TailraceWorker(base):  # type: ignore[misc]
        def _install_signal_handlers(self) -> None:
            super()._install_signal_handlers()
            if started.requested:
                self._stop_requested = True  # out of work()'s loop at its first check

    return TailraceWorker

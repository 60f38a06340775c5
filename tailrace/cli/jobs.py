"""Background jobs on RQ: ``tailrace worker`` runs them (backfill, dead-letter replay).

Jobs live in the pipeline's Redis under RQ's own keys, in queues named per pipeline
(:meth:`tailrace.keys.Keys.queue`), so a large backfill or replay is visible
(``rq info``), resumable and retried, and any number of workers on any host share it.

A worker is a pipeline worker like the others: it publishes its lifecycle record (role
``worker``; ``idle`` waiting for jobs, ``active`` with the job in hand, ``stopped``; counters
``jobs_done``/``jobs_failed``), so ``tailrace status``, ``/metrics`` and ``/api/v1/status``
show it, and serves ``service.http`` itself unless a supervisor does.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from ..broker import BROKER_ERRORS
from ..keys import Keys
from ..lifecycle import Lifecycle, Publisher, State, ThreadRecord
from ..logs import event
from ..runtime import NO_HTTP_ENV
from ..signals import block, unblock_stops
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
    # Stop signals stay blocked until RQ's handlers are in (TailraceWorker): one sent while
    # starting waits for them, and every thread started meanwhile (the publisher, RQ's
    # pubsub) keeps them blocked, so they reach the main thread and interrupt its blocking
    # dequeue (delivered to another thread, they waited for the dequeue's timeout).
    block()
    from rq import Queue, Worker

    config = load(config_path)
    init_logging(config, "worker", log_level, log_format)
    if workers > 1:
        from .supervising import supervise

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
    lifecycle = Lifecycle("worker")
    lifecycle.extra["queues"] = list(queues)
    jobs = lifecycle.thread("jobs")
    jobs.set_state(State.IDLE, "waiting for jobs")
    http = _serve_http(config, lifecycle)  # first: once the record shows, so does this
    publisher = Publisher(lifecycle, client, keys.worker(lifecycle.id),
                          config.service.publish_interval_s)
    publisher.start()
    try:
        w = _worker_class(Worker, jobs)(rq_queues, connection=client)
        lifecycle.extra["rq_worker"] = w.name
        level = (log_level or config.service.log_level).upper()
        ok = w.work(burst=burst, logging_level=level, with_scheduler=False)
    finally:
        block()  # exiting: a late repeat of the stop must not change the status (runtime)
        jobs.set_state(State.STOPPED)
        publisher.stop(final=True)
        if http is not None:
            http.stop()
    logging.getLogger(__name__).info("worker stopped (%s)", "jobs done" if ok else "idle")


def _serve_http(config: Any, lifecycle: Lifecycle) -> Any:
    """``service.http`` for this worker's own record (a supervisor serves its children's)."""
    address = config.service.http
    if not address or os.environ.get(NO_HTTP_ENV):
        return None
    from ..httpserver import StatusServer  # ~10 MiB: only with the endpoint on

    try:
        return StatusServer(address, lambda: [lifecycle.snapshot()],
                            max_errors_per_min=config.service.health_max_errors_per_min
                            ).start()
    except OSError as exc:
        event(logging.getLogger(__name__), logging.ERROR, "http_bind_error",
              f"cannot serve service.http on {address}: {exc.strerror}; continuing without "
              "the endpoint (is another process using the port?)")
        return None


def _worker_class(base: type[Any], jobs: ThreadRecord) -> type[Any]:
    """RQ's worker, taking the stop signals held since the start once its handlers are in,
    and reporting each job in its lifecycle record (``jobs``)."""
    from rq.exceptions import InvalidJobOperation, NoSuchJobError, StopRequested

    class TailraceWorker(base):  # type: ignore[misc]
        def _install_signal_handlers(self) -> None:
            super()._install_signal_handlers()
            try:
                unblock_stops()  # one held since the start runs RQ's handler now
            except StopRequested:
                self._stop_requested = True  # out of work()'s loop at its first check

        def _shutdown(self) -> None:
            # RQ raises StopRequested from its signal handler when idle. Landing inside a
            # log call (its maintenance logs), that exception is caught by logging's
            # handleError and the stop was lost (seen in CI). The flag makes work()'s loop
            # stop at its next check whichever way the raise goes.
            self._stop_requested = True
            super()._shutdown()

        def execute_job(self, job: Any, queue: Any) -> Any:
            # Runs in this process (the job itself may run in a forked work horse).
            jobs.set_state(State.ACTIVE, f"job {job.id}: {job.description or job.func_name}"[:200])
            try:
                return super().execute_job(job, queue)
            finally:
                try:
                    failed = job.get_status(refresh=True) == "failed"
                except BROKER_ERRORS + (NoSuchJobError, InvalidJobOperation):
                    failed = False  # gone already (result TTL) or unreadable: count it done
                jobs.add("jobs_failed" if failed else "jobs_done")
                jobs.set_state(State.IDLE, "waiting for jobs")

    return TailraceWorker

"""Long-running commands: run, agent, processor, sink."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

import click
import redis

from ..broker import connect
from ..config import Config, load_config
from ..embedded import EmbeddedRedis
from ..errors import BrokerUnavailable, ConfigError
from ..keys import Keys
from ..logs import event
from ..runtime import NO_HTTP_ENV, broker_url
from ..signals import StopSignals, block, hold
from ..supervise import Child, Supervisor
from .common import (
    broker_option,
    child_env,
    config_option,
    init_logging,
    load,
    log_options,
    run_role,
)
from .supervisor_http import children_records

__all__ = ["agent", "processor", "run", "sink"]

log = logging.getLogger(__name__)


def _child_args(config: Config, role: str, *extra: str) -> list[str]:
    return [role, "-c", config.file, *extra]


def _log_args(log_level: str | None, log_format: str | None) -> list[str]:
    args = []
    if log_level:
        args += ["--log-level", log_level]
    if log_format:
        args += ["--log-format", log_format]
    return args


def supervise(config: Config, broker: str | None, children: list[Child]) -> int:
    """Run children against ``broker`` (or an embedded server started here).

    SIGHUP validates the config and, when it is valid, forwards the signal: every child
    drains and re-executes itself with the new config. The children do not serve
    ``service.http``; this process serves it for all of them.
    """
    env = child_env(None)
    env[NO_HTTP_ENV] = "1"
    sup = Supervisor(children, shutdown_timeout_s=config.service.shutdown_timeout_s, env=env)

    def on_hup() -> None:
        try:
            load_config(config.file, config.registry)
        except ConfigError as exc:
            event(log, logging.ERROR, "supervisor_reload_rejected",
                  f"config {config.file} is invalid; children keep the running one:\n{exc}")
            return
        sup.signal_all(signal.SIGHUP)

    stop = threading.Event()
    embedded: EmbeddedRedis | None = None

    def on_force(_signum: int) -> None:
        sup.kill_all()
        if embedded is not None:
            embedded.terminate()  # in a session of its own: the group's signals miss it

    StopSignals(lambda _s: stop.set(), on_force=on_force, name="supervisor",
                on_hup=lambda: threading.Thread(target=on_hup).start()).install()
    url = broker_url(config, broker)
    starting: threading.Thread | None = None
    failed: list[BrokerUnavailable] = []
    if url is None:
        # Its socket is known before it answers: the children start (and spend their first
        # ~0.3 s importing) while it comes up, instead of after.
        server = embedded = EmbeddedRedis(config.data_dir, config.service.embedded.appendfsync)
        url = server.url

        def start_embedded() -> None:
            try:
                server.start()
            except BrokerUnavailable as exc:
                failed.append(exc)
                stop.set()  # the children drain and stop; the error is raised below

        starting = threading.Thread(target=start_embedded, name="embedded-redis", daemon=True)
        starting.start()
    env["TAILRACE_BROKER"] = url
    http = None
    clients: list[redis.Redis] = []

    def client() -> redis.Redis:
        if not clients:
            clients.append(connect(url, name="tailrace-supervisor"))
        return clients[0]

    try:
        if config.service.http:
            from ..httpserver import StatusServer  # ~10 MiB: only with the endpoint on

            keys = Keys(config.service.prefix)
            http = StatusServer(
                config.service.http, children_records(client, keys, sup.pids),
                max_errors_per_min=config.service.health_max_errors_per_min,
            ).start()
        keep_up = None if embedded is None else _keep_up(embedded, starting)
        code = sup.run(stop, tick=keep_up)
        if failed:
            raise failed[0]
        return code
    finally:
        if http is not None:
            http.stop()
        for c in clients:
            c.close()
        if starting is not None:
            starting.join()
        if embedded is not None:
            embedded.stop()
        block()  # exiting: a late repeat of the stop must not change the status (runtime)


def _keep_up(embedded: EmbeddedRedis,
             starting: threading.Thread | None) -> Callable[[], None]:
    """Restart the embedded Redis when it dies (killed, out of memory): the children wait
    out the outage and resume; its append-only file keeps what they committed."""
    down = [False]
    next_try = [0.0]

    def tick() -> None:
        if starting is not None and starting.is_alive():
            return  # still coming up: a failure there stops everything (supervise)
        if not down[0]:
            code = embedded.exited()
            if code is None:
                return
            down[0] = True
            event(log, logging.ERROR, "supervisor_redis_exited",
                  f"the embedded Redis exited with {code}; restarting it (see "
                  f"{embedded.dir / 'redis.log'})")
        if time.monotonic() < next_try[0]:
            return
        try:
            embedded.proc = None
            embedded.start()
            down[0] = False
        except BrokerUnavailable as exc:
            next_try[0] = time.monotonic() + 5.0
            event(log, logging.ERROR, "supervisor_redis_restart_error",
                  f"{exc}; trying again in 5 s")

    return tick


@click.command()
@config_option
@broker_option
@click.option("--processors", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processor worker processes.")
@log_options
def run(config_path: str, broker: str | None, processors: int, log_level: str | None,
        log_format: str | None) -> None:
    """Run every role on this machine (embedded Redis when no broker is set)."""
    hold()  # a stop while starting up is kept for the handlers, not a traceback
    config = load(config_path)
    init_logging(config, "run", log_level, log_format)
    extra = _log_args(log_level, log_format)
    children = [Child("agent", _child_args(config, "agent", *extra))]
    children += [Child(f"processor-{i}", _child_args(config, "processor", *extra))
                 for i in range(processors)]
    if config.outputs:
        children.append(Child("sink", _child_args(config, "sink", *extra)))
    sys.exit(supervise(config, broker, children))


@click.command()
@config_option
@broker_option
@log_options
def agent(config_path: str, broker: str | None, log_level: str | None,
          log_format: str | None) -> None:
    """Tail this node's files into the raw streams."""
    hold()  # a stop while starting up is kept for the handlers, not a traceback
    from edge_agent import Agent

    from ..runtime import Runtime

    config = load(config_path)
    init_logging(config, "agent", log_level, log_format)

    def main() -> None:
        rt = Runtime(config, "agent", broker=broker)
        rt.install_signals()
        try:
            Agent(config, rt).run()
        finally:
            rt.close()

    run_role(main)


@click.command()
@config_option
@broker_option
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes on this machine.")
@log_options
def processor(config_path: str, broker: str | None, workers: int, log_level: str | None,
              log_format: str | None) -> None:
    """Parse and filter raw batches (scale out with --workers and more hosts)."""
    hold()  # a stop while starting up is kept for the handlers, not a traceback
    from processors import run_processor

    config = load(config_path)
    init_logging(config, "processor", log_level, log_format)
    if workers > 1:
        extra = _log_args(log_level, log_format)
        children = [Child(f"processor-{i}", _child_args(config, "processor", *extra))
                    for i in range(workers)]
        sys.exit(supervise(config, broker, children))
    run_role(lambda: run_processor(config, broker=broker))


@click.command()
@config_option
@broker_option
@click.option("--output", "output", default=None, help="Deliver only this output (its alias "
              "or <plugin>.<n>); default: all outputs.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes on this machine.")
@log_options
def sink(config_path: str, broker: str | None, output: str | None, workers: int,
         log_level: str | None, log_format: str | None) -> None:
    """Deliver processed records to the outputs."""
    hold()  # a stop while starting up is kept for the handlers, not a traceback
    from sinks import run_sink

    config = load(config_path)
    init_logging(config, "sink", log_level, log_format)
    if output is not None:
        try:
            config.output(output)
        except KeyError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="--output") from None
    if workers > 1:
        extra = _log_args(log_level, log_format)
        if output:
            extra += ["--output", output]
        children = [Child(f"sink-{i}", _child_args(config, "sink", *extra))
                    for i in range(workers)]
        sys.exit(supervise(config, broker, children))
    run_role(lambda: run_sink(config, output=output, broker=broker))

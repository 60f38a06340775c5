"""Long-running commands (run, agent, processor, sink) and the wiring of the three roles.

Each role is put together here and nowhere else (the role packages hold their handlers
and plugins; the core holds the runtime and the consumer loop): :func:`agent_main`,
:func:`processor_main`, :func:`sink_main` build the :class:`~tailrace.runtime.Runtime`,
connect, build the handler and its consumer, and run until stopped. A role's command runs
its main in this process; ``run`` and ``--workers N`` supervise children that run the same
mains, forked from the supervisor once it has loaded the config (tailrace.supervise).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click
import redis

from edge_agent import Agent
from processors import ProcessorHandler
from sinks import SinkHandler

from ..broker import connect
from ..config import Config, OutputConfig, load_config
from ..consumer import StreamConsumer
from ..embedded import EmbeddedRedis
from ..errors import BrokerUnavailable, ConfigError
from ..keys import PROCESSORS_GROUP, Keys, sink_group
from ..lifecycle import Lifecycle
from ..logs import event
from ..ratelimit import RedisRateLimits
from ..runtime import NO_HTTP_ENV, Runtime, broker_url
from ..signals import ProcessStop, hold
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

__all__ = ["agent", "agent_main", "processor", "processor_consumer", "processor_main", "run",
           "sink", "sink_consumer", "sink_main"]

log = logging.getLogger(__name__)


# -- the roles' wiring ---------------------------------------------------------------------
def agent_main(config: Config, *, broker: str | None = None) -> None:
    """Run the agent until SIGTERM/SIGINT; exits after flushing and committing."""
    rt = Runtime(config, "agent", broker=broker)
    rt.install_signals()
    try:
        Agent(config, rt).run()
    finally:
        rt.close()


def processor_consumer(config: Config, keys: Keys, lifecycle: Lifecycle,
                       client: Any) -> StreamConsumer:
    """The consumer of the ``processors`` group; ``run(stop)`` processes until ``stop``."""
    handler = ProcessorHandler(config, lifecycle.thread("consumer"),
                               rate_limits=RedisRateLimits(client, keys))
    return StreamConsumer(client, keys, config.service, PROCESSORS_GROUP, handler, lifecycle,
                          stage_in="raw", stage_out="out", kind="raw")


def processor_main(config: Config, *, broker: str | None = None) -> None:
    """Run one processor worker until SIGTERM/SIGINT; exits after draining."""
    rt = Runtime(config, "processor", broker=broker)
    rt.install_signals()
    try:
        client = rt.connect()
        processor_consumer(config, rt.keys, rt.lifecycle, client).run(rt.stop)
    finally:
        rt.close()


def sink_consumer(config: Config, keys: Keys, lifecycle: Lifecycle, pc: OutputConfig,
                  client: Any) -> StreamConsumer:
    """The consumer of output ``pc``'s group; ``run(stop)`` delivers until ``stop`` is set."""
    handler = SinkHandler(config, pc, lifecycle.thread(f"sink:{pc.id}"))
    return StreamConsumer(
        client, keys, config.service, sink_group(pc.id), handler, lifecycle,
        stage_in="out", stage_out="out", kind="records", backlog_limit=0,
        single_writer=pc.plugin.single_writer, plugin=pc.id,
    )


def sink_main(config: Config, *, output: str | None = None, broker: str | None = None) -> None:
    """Run a sink worker for one output (or every output, one thread each) until stopped."""
    outputs = [config.output(output)] if output else list(config.outputs)
    rt = Runtime(config, "sink", broker=broker)
    rt.install_signals()
    try:
        client = rt.connect()
        consumers = [sink_consumer(config, rt.keys, rt.lifecycle, pc, client) for pc in outputs]
        threads = [threading.Thread(target=c.run, args=(rt.stop,), name=f"sink-{pc.id}")
                   for c, pc in zip(consumers, outputs, strict=True)]
        for t in threads:
            t.start()
        # The main thread waits for the stop signal; the consumers drain and release.
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)
        for c in consumers:
            c.handler.close()
    finally:
        rt.close()


# -- supervising ---------------------------------------------------------------------------
def _child(name: str, role: str, config: Config, log_level: str | None,
           log_format: str | None, main: Callable[[], None], *extra: str) -> Child:
    """A child running ``tailrace <role> -c <config> <extra>``: forked with the config
    loaded here at its first start (``main``), from its command line after."""
    args = [role, "-c", config.file, *_log_args(log_level, log_format), *extra]

    def forked() -> None:
        hold()  # as the command does first thing (the signals are blocked until then)
        init_logging(config, role, log_level, log_format)
        run_role(main)

    return Child(name, args, main=forked)


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

    Raises:
        BrokerUnavailable: the embedded Redis did not start (no child was started).
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

    embedded: EmbeddedRedis | None = None

    def on_force(_signum: int) -> None:
        sup.kill_all()
        if embedded is not None:
            embedded.terminate()  # in a session of its own: the group's signals miss it

    # No drain timeout of its own: stop_all kills the children that outlast theirs.
    stopping = ProcessStop("supervisor", on_force=on_force,
                           on_hup=lambda: threading.Thread(target=on_hup).start())
    stopping.install()
    stop = stopping.event
    url = broker_url(config, broker)
    if url is None:
        # Up before the children (~20 ms): forked, they connect within milliseconds.
        embedded = EmbeddedRedis(config.data_dir, config.service.embedded.appendfsync)
        embedded.start()
        url = embedded.url
    env["TAILRACE_BROKER"] = url
    http = None
    clients: list[redis.Redis] = []

    def client() -> redis.Redis:
        if not clients:
            clients.append(connect(url, name="tailrace-supervisor"))
        return clients[0]

    try:
        sup.start(stop)  # first: the children fork while this process has no other thread
        if config.service.http:
            from ..httpserver import StatusServer  # ~10 MiB: only with the endpoint on

            keys = Keys(config.service.prefix)
            http = StatusServer(
                config.service.http, children_records(client, keys, sup.pids),
                max_errors_per_min=config.service.health_max_errors_per_min,
            ).start()
        return sup.run(stop, tick=None if embedded is None else _keep_up(embedded))
    finally:
        if http is not None:
            http.stop()
        for c in clients:
            c.close()
        if embedded is not None:
            embedded.stop()
        stopping.exiting()


def _keep_up(embedded: EmbeddedRedis) -> Callable[[], None]:
    """Restart the embedded Redis when it dies (killed, out of memory): the children wait
    out the outage and resume; its append-only file keeps what they committed."""
    down = [False]
    next_try = [0.0]

    def tick() -> None:
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


def _supervised(config: Config, broker: str | None, children: list[Child]) -> None:
    run_role(lambda: sys.exit(supervise(config, broker, children)))


# -- commands ------------------------------------------------------------------------------
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
    logs = (log_level, log_format)
    children = [_child("agent", "agent", config, *logs, lambda: agent_main(config))]
    children += [_child(f"processor-{i}", "processor", config, *logs,
                        lambda: processor_main(config)) for i in range(processors)]
    if config.outputs:
        children.append(_child("sink", "sink", config, *logs, lambda: sink_main(config)))
    _supervised(config, broker, children)


@click.command()
@config_option
@broker_option
@log_options
def agent(config_path: str, broker: str | None, log_level: str | None,
          log_format: str | None) -> None:
    """Tail this node's files into the raw streams."""
    hold()  # a stop while starting up is kept for the handlers, not a traceback
    config = load(config_path)
    init_logging(config, "agent", log_level, log_format)
    run_role(lambda: agent_main(config, broker=broker))


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
    config = load(config_path)
    init_logging(config, "processor", log_level, log_format)
    if workers > 1:
        _supervised(config, broker, [
            _child(f"processor-{i}", "processor", config, log_level, log_format,
                   lambda: processor_main(config)) for i in range(workers)])
    run_role(lambda: processor_main(config, broker=broker))


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
    config = load(config_path)
    init_logging(config, "sink", log_level, log_format)
    if output is not None:
        try:
            config.output(output)
        except KeyError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="--output") from None
    if workers > 1:
        extra = ["--output", output] if output else []
        _supervised(config, broker, [
            _child(f"sink-{i}", "sink", config, log_level, log_format,
                   lambda: sink_main(config, output=output), *extra) for i in range(workers)])
    run_role(lambda: sink_main(config, output=output, broker=broker))

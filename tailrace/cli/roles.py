"""Long-running role commands (agent, processor, sink) and the wiring of the three roles.

Each role is put together here and nowhere else (the role packages hold their handlers
and plugins; the core holds the runtime and the consumer loop): :func:`agent_main`,
:func:`processor_main`, :func:`sink_main` build the :class:`~tailrace.runtime.Runtime`,
connect, build the handler and its consumer, and run until stopped. A role's command runs
its main in this process; ``run`` (cli/run.py) and ``--workers N`` supervise children that
run the same mains (cli/supervising.py), forked from the supervisor once it has loaded the
config.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import click

from edge_agent import Agent
from processors import ProcessorHandler
from sinks import SinkHandler

from ..config import Config, OutputConfig
from ..consumer import StreamConsumer
from ..consumer.loop import DEFAULT_READ_COUNT
from ..keys import PROCESSORS_GROUP, Keys, sink_group
from ..lifecycle import Lifecycle
from ..ratelimit import RedisRateLimits
from ..runtime import Runtime
from ..signals import hold
from .common import broker_option, config_option, init_logging, load, log_options, run_role
from .supervising import role_child, supervised

if TYPE_CHECKING:  # imported where a processor with helpers is wired (multiprocessing...)
    from processors.pool import PooledHandler

__all__ = ["agent", "agent_main", "processor", "processor_consumer", "processor_main", "sink",
           "sink_consumer", "sink_main"]


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
    """The consumer of the ``processors`` group; ``run(stop)`` processes until ``stop``.

    With ``service.processor_helpers`` its handler forks that many helper processes
    (processors/pool.py); the caller closes ``consumer.handler`` when done."""
    status = lifecycle.thread("consumer")
    limits = RedisRateLimits(client, keys)
    helpers = config.service.processor_helpers
    handler: ProcessorHandler | PooledHandler
    if helpers:
        from processors.pool import PooledHandler  # multiprocessing's modules come with it

        handler = PooledHandler(config, status, helpers=helpers, rate_limits=limits)
    else:
        handler = ProcessorHandler(config, status, rate_limits=limits)
    # Two entries per helper and read: each takes its next as soon as it is free.
    count = max(DEFAULT_READ_COUNT, 2 * helpers)
    return StreamConsumer(client, keys, config.service, PROCESSORS_GROUP, handler, lifecycle,
                          stage_in="raw", stage_out="out", kind="raw", read_count=count)


def processor_main(config: Config, *, broker: str | None = None) -> None:
    """Run one processor worker until SIGTERM/SIGINT; exits after draining."""
    rt = Runtime(config, "processor", broker=broker)
    rt.install_signals()
    try:
        client = rt.connect()
        consumer = processor_consumer(config, rt.keys, rt.lifecycle, client)
        try:
            consumer.run(rt.stop)
        finally:
            consumer.handler.close()
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


# -- commands ------------------------------------------------------------------------------
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
        supervised(config, broker, [
            role_child(f"processor-{i}", "processor", config, log_level, log_format,
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
        supervised(config, broker, [
            role_child(f"sink-{i}", "sink", config, log_level, log_format,
                   lambda: sink_main(config, output=output), *extra) for i in range(workers)])
    run_role(lambda: sink_main(config, output=output, broker=broker))

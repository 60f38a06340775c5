"""``tailrace run``: every role on this machine, one process each, from one supervisor.

This module is light on purpose: with no broker set, the command launches the embedded
Redis first (its data dir read from the YAML alone, :func:`tailrace.config.embedded_spec`)
and only then imports the roles and validates the config, ~0.15-0.2 s of one core, during
which the server boots on the other. The supervisor (cli/supervising.py) keeps the server
when the validated config wants that one, waits for its answer before forking the roles,
and stops it when the config wants another (or is invalid, or names a broker).
"""

from __future__ import annotations

import gc

import click

from ..config import embedded_spec
from ..embedded import EmbeddedRedis
from ..signals import hold
from .common import (
    broker_option,
    collector_paused,
    config_option,
    init_logging,
    load,
    log_options,
)

__all__ = ["run"]


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
    early = None if broker else _launch_embedded(config_path)  # --broker / TAILRACE_BROKER
    try:
        with collector_paused():
            from .roles import agent_main, processor_main, sink_main
            from .supervising import role_child, supervised
        config = load(config_path)
        # What the start made lives as long as this process: out of its collections from
        # now on (one over it costs ~10 ms on the way to the forks), and of the children's.
        gc.freeze()
        init_logging(config, "run", log_level, log_format)
        logs = (log_level, log_format)
        children = [role_child("agent", "agent", config, *logs, lambda: agent_main(config))]
        children += [role_child(f"processor-{i}", "processor", config, *logs,
                                lambda: processor_main(config)) for i in range(processors)]
        if config.outputs:
            children.append(role_child("sink", "sink", config, *logs,
                                       lambda: sink_main(config)))
    except BaseException:
        if early is not None:
            early.stop()  # e.g. the config is invalid: nothing runs on it
        raise
    supervised(config, broker, children, early=early)


def _launch_embedded(config_path: str) -> EmbeddedRedis | None:
    """The embedded Redis the config at ``config_path`` seems to want, launched (not yet
    answering); None when it names a broker or is not plain enough to tell."""
    spec = embedded_spec(config_path)
    if spec is None:
        return None
    server = EmbeddedRedis(*spec)
    return server if server.spawn() else None

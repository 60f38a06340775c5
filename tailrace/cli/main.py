"""The ``tailrace`` command group."""

from __future__ import annotations

import click

from .. import __version__
from .backfill import backfill
from .cluster import cluster_group
from .demo import demo
from .dlq import dlq
from .jobs import worker
from .ops import reload, status
from .reference import reference, schema
from .roles import agent, processor, run, sink
from .tools import config_group, generate, parse

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tailrace")
def cli() -> None:
    """tailrace: a log pipeline on Redis Streams with exactly-once delivery."""


for command in (run, agent, processor, sink, config_group, parse, generate, demo, status,
                reload, worker, dlq, backfill, cluster_group):
    cli.add_command(command)
config_group.add_command(reference)
config_group.add_command(schema)


def main() -> None:
    cli(prog_name="tailrace")

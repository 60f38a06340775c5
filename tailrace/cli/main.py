"""The ``tailrace`` command group."""

from __future__ import annotations

import click

from .. import __version__
from .demo import demo
from .ops import reload, status
from .roles import agent, processor, run, sink
from .tools import config_group, generate, parse

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tailrace")
def cli() -> None:
    """tailrace: a log pipeline on Redis Streams with exactly-once delivery."""


for command in (run, agent, processor, sink, config_group, parse, generate, demo, status,
                reload):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="tailrace")

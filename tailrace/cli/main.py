"""The ``tailrace`` command group.

Each command's module is imported when that command runs (or help lists it), not before:
``tailrace run`` and the role processes it starts skip the imports of the operating
commands (status, dlq, backfill, demo, ...), which took ~0.15 s of every process's start.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .. import __version__
from .common import collector_paused

__all__ = ["cli", "main"]

#: Command name -> (module in tailrace.cli, attribute), in the order help lists them.
_COMMANDS = {
    "run": ("run", "run"),
    "agent": ("roles", "agent"),
    "processor": ("roles", "processor"),
    "sink": ("roles", "sink"),
    "config": ("tools", "config_group"),
    "parse": ("tools", "parse"),
    "generate": ("tools", "generate"),
    "demo": ("demo", "demo"),
    "status": ("ops", "status"),
    "reload": ("ops", "reload"),
    "worker": ("jobs", "worker"),
    "dlq": ("dlq", "dlq"),
    "backfill": ("backfill", "backfill"),
    "cluster": ("cluster", "cluster_group"),
}


def _load(name: str) -> click.Command:
    module, attr = _COMMANDS[name]
    with collector_paused():
        command: click.Command = getattr(importlib.import_module(f"{__package__}.{module}"),
                                         attr)
    if name == "config" and isinstance(command, click.Group) and "schema" not in command.commands:
        from .reference import reference, schema

        command.add_command(reference)
        command.add_command(schema)
    return command


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        command = self.commands.get(cmd_name)
        if command is None:
            command = self.commands[cmd_name] = _load(cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        # Help shows every command's short help: that one imports them all.
        for name in _COMMANDS:
            self.get_command(ctx, name)
        super().format_commands(ctx, formatter)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tailrace")
def cli() -> None:
    """tailrace: a log pipeline on Redis Streams with exactly-once delivery."""


def main() -> None:
    cli(prog_name="tailrace")

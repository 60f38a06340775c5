"""``tailrace cluster``: the pipeline's partitions on a Redis Cluster."""

from __future__ import annotations

import click
from redis.crc import key_slot

from ..errors import PipelineError
from ..keys import Keys
from ..slots import move_slot, placement, plan_spread
from .common import broker_option, config_option, fail, load
from .ops import open_broker

__all__ = ["cluster_group"]


@click.group("cluster")
def cluster_group() -> None:
    """The pipeline's partitions on a Redis Cluster."""


@cluster_group.command("spread")
@config_option
@broker_option
@click.option("--apply", "apply_", is_flag=True,
              help="Move the slots (default: only print the plan).")
def spread(config_path: str, broker: str | None, apply_: bool) -> None:
    """Even out the partitions over the masters by moving partition slots.

    Prints where each partition lives and the moves that leave every master within one
    partition of the others; with --apply it makes them, one slot at a time (safe while
    the pipeline runs: clients follow the move).
    """
    config = load(config_path)
    client = open_broker(config, broker)
    keys = Keys(config.service.prefix)
    partitions = config.service.partitions
    try:
        where = placement(client, keys, partitions)
        for node, parts in sorted(where.items()):
            click.echo(f"{node}: partitions {','.join(map(str, parts)) or '-'}")
        moves = plan_spread(where, lambda p: key_slot(keys.raw(p).encode()))
        if not moves:
            click.echo("already even: nothing to move")
            return
        for m in moves:
            verb = "moving" if apply_ else "would move"
            click.echo(f"{verb} partition {m.partition} (slot {m.slot}) {m.source} -> "
                       f"{m.target}")
            if apply_:
                n = move_slot(client, m)
                click.echo(f"  moved {n} keys")
        if not apply_:
            click.echo("run again with --apply to move them")
    except PipelineError as exc:
        fail(str(exc))
    finally:
        client.close()

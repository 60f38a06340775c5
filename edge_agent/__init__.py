"""The edge agent: tails log files on a node and commits line batches to the raw streams.

It imports only the core package (``tailrace``), the standard library, redis, msgpack and
pyyaml (a test enforces this), so it stays small on every node.
"""

from __future__ import annotations

from .agent import Agent
from .plugins import INPUTS
from .tail import TailInput, TailOptions

__all__ = ["INPUTS", "Agent", "TailInput", "TailOptions"]

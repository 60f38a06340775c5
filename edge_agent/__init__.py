"""The edge agent: tails log files on a node and commits batches of messages to the raw streams.

It imports only the core package (``tailrace``), the standard library and what the core
already depends on (redis, msgpack, pydantic, orjson); a test enforces this, so it stays
small on every node.
"""

from __future__ import annotations

from .agent import Agent
from .options import MultilineOptions, Selector, TailOptions
from .plugins import INPUTS
from .tail import TailInput

__all__ = ["INPUTS", "Agent", "MultilineOptions", "Selector", "TailInput", "TailOptions"]

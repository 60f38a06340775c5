"""Plugin interfaces, the registry, and third-party plugins from entry points.

Each role package keeps an explicit list of its built-in plugins (inputs in
``edge_agent``, filters and parsers in ``processors``, outputs in ``sinks``); the CLI
combines those lists with entry points (``tailrace.inputs``, ``tailrace.filters``,
``tailrace.parsers``, ``tailrace.outputs``) into one :class:`Registry`. The core never
imports a role package. A plugin class declares ``name`` (the YAML ``name:``), a one-line
``description`` and ``Options``, a pydantic model that is the single declaration of its
options (parsing, defaults, docs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from .outcome import FilterResult, Outcome

__all__ = [
    "ENTRY_POINT_GROUPS",
    "FilterPlugin",
    "InputPlugin",
    "OutputPlugin",
    "ParserPlugin",
    "PluginClass",
    "Record",
    "Registry",
]

log = logging.getLogger(__name__)

Record = dict[str, Any]

ENTRY_POINT_GROUPS = {
    "inputs": "tailrace.inputs",
    "filters": "tailrace.filters",
    "parsers": "tailrace.parsers",
    "outputs": "tailrace.outputs",
}


class PluginClass(Protocol):
    """What every plugin class declares."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BaseModel]]


@runtime_checkable
class ParserPlugin(Protocol):
    """Turns one text value into fields. Pure: no I/O, no broker."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def parse(self, text: str) -> Record | None:
        """Fields parsed from ``text``, or ``None`` when it does not match."""


@runtime_checkable
class FilterPlugin(Protocol):
    """Transforms a batch of records. Pure over the batch: the worker owns the broker."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def process(self, records: list[Record]) -> FilterResult:
        """Filter, parse or reshape ``records`` (in place or into a new list).

        Never raises for a bad record: it goes into ``FilterResult.rejected`` with the reason.
        """


@runtime_checkable
class OutputPlugin(Protocol):
    """Delivers batches of records to an external store."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    #: True when the target allows one writer only (a file): one worker owns all partitions.
    single_writer: ClassVar[bool]

    def write_batch(self, records: list[Record]) -> Outcome:
        """Deliver ``records``; idempotent, so a redelivery after a crash writes nothing twice."""

    def close(self) -> None:
        """Release connections and files. May not be called after a crash."""


@runtime_checkable
class InputPlugin(Protocol):
    """Reads a source in batches; the agent loop commits them through the broker."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def close(self) -> None: ...


@dataclass
class Registry:
    """Plugin classes by kind and YAML name."""

    inputs: dict[str, Any] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    parsers: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, classes: Iterable[Any]) -> None:
        table: dict[str, Any] = getattr(self, kind)
        for cls in classes:
            for attr in ("name", "description", "Options"):
                if not hasattr(cls, attr):
                    raise TypeError(f"{kind} plugin {cls!r} does not declare {attr!r}")
            if cls.name in table and table[cls.name] is not cls:
                raise TypeError(f"two {kind} plugins are named {cls.name!r}")
            table[cls.name] = cls

    def load_entry_points(self) -> None:
        """Add third-party plugins declared under the ``tailrace.*`` entry point groups."""
        for kind, group in ENTRY_POINT_GROUPS.items():
            for ep in entry_points(group=group):
                try:
                    cls = ep.load()
                except Exception as exc:  # a broken plugin must not stop the pipeline
                    log.error(
                        "plugin_load_error: entry point %s=%s in group %s failed to load: %s",
                        ep.name, ep.value, group, exc,
                    )
                    continue
                self.add(kind, [cls])

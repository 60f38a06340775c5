"""Plugin contracts, the registry, and third-party plugins from entry points.

Each kind of plugin has one declared contract, an abstract base class here:
:class:`InputPlugin`, :class:`FilterPlugin`, :class:`ParserPlugin`, :class:`OutputPlugin`.
Optional hooks have no-op defaults, so the roles call them directly (an output's
``recover``, ``checkpoint``, ``committed``, ``backoff``; a filter's ``take_emitted`` and
``process_lines``) and
never probe a plugin for what it happens to define. Built-in plugins subclass their base;
a third-party class that only has the right shape (``name``, ``write_batch``, ...) is
*adopted* when registered: the registry derives a subclass of it and the base, so its own
methods win and the hooks it lacks are the no-ops.

Each role package keeps an explicit list of its built-in plugins (inputs in
``edge_agent``, filters and parsers in ``processors``, outputs in ``sinks``; the last
three by name and ``module:class``, imported when a config names one); the CLI
combines those lists with entry points (``tailrace.inputs``, ``tailrace.filters``,
``tailrace.parsers``, ``tailrace.outputs``) into one :class:`Registry`, a
:class:`PluginTable` per kind. The core never imports a role package. A plugin class
declares ``name`` (the YAML ``name:``), a one-line ``description`` and ``Options``, a
pydantic model extending its kind's options base (:mod:`tailrace.options`) that is the
single declaration of its options (parsing, defaults, docs); cross-checks against the rest
of the config are the options' ``check_config``.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast

from .options import FilterOptions, InputOptions, Options, OutputOptions, ParserOptions
from .outcome import FilterResult, Outcome
from .record import Lines, Record
from .retry import Backoff

if TYPE_CHECKING:
    #: A whole-config check: (absolute key path, message) for each problem it finds.
    ConfigCheck = Callable[[Any], list[tuple[tuple[str | int, ...], str]]]

__all__ = [
    "ENTRY_POINT_GROUPS",
    "FilterPlugin",
    "InputPlugin",
    "Kind",
    "OutputPlugin",
    "ParserPlugin",
    "Plugin",
    "PluginTable",
    "Record",
    "Registry",
]

log = logging.getLogger(__name__)

Kind = Literal["inputs", "filters", "parsers", "outputs"]

ENTRY_POINT_GROUPS: dict[Kind, str] = {
    "inputs": "tailrace.inputs",
    "filters": "tailrace.filters",
    "parsers": "tailrace.parsers",
    "outputs": "tailrace.outputs",
}

#: An output's delivery retries, unless it says otherwise (``OutputPlugin.backoff``).
OUTPUT_RETRY_BASE_S = 0.2
OUTPUT_RETRY_CAP_S = 10.0


class Plugin(ABC):  # noqa: B024 - a declaration of class attributes, no abstract method
    """What every plugin class declares."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[Options]]

    def close(self) -> None:  # noqa: B027 - a no-op default, overriding is optional
        """Release connections and files. May not be called after a crash."""


class ParserPlugin(Plugin):
    """Turns one text value into fields. Pure: no I/O, no broker."""

    Options: ClassVar[type[ParserOptions]]

    def __init__(self, options: ParserOptions) -> None:  # noqa: B027 - signature only
        """Built once per configured parser, at start-up."""

    @abstractmethod
    def parse(self, text: str) -> Record | None:
        """Fields parsed from ``text``, or ``None`` when it does not match."""


class FilterPlugin(Plugin):
    """Transforms a batch of records. Pure over the batch: the worker owns the broker."""

    Options: ClassVar[type[FilterOptions]]
    #: True when the filter re-emits records (``take_emitted``): they run the chain again.
    emits: ClassVar[bool] = False
    #: True when the filter may change a record's ``_tag``.
    changes_tags: ClassVar[bool] = False

    def __init__(self, options: FilterOptions, ctx: object) -> None:  # noqa: B027
        """Built once per configured filter; ``ctx`` is a ``processors.FilterContext``."""

    @abstractmethod
    def process(self, records: list[Record]) -> FilterResult:
        """Filter, parse or reshape ``records`` (in place or into a new list).

        Never raises for a bad record: it goes into ``FilterResult.rejected`` with the reason.
        """

    def take_emitted(self) -> list[Record]:
        """Records emitted by the last ``process`` calls (only when ``emits``), then none."""
        return []

    def process_lines(self, lines: Lines) -> FilterResult | None:
        """Build and filter the records of a raw batch's lines in one go, or ``None``.

        When this filter is the first of the chain and matches the batch's tag, the chain
        offers it the lines before it builds a ``{"log": ...}`` record per line. A filter
        that can make its output straight from the texts (the parser filter) returns what
        ``process(lines.records())`` would have, exactly; ``None`` (the default) lets the
        chain build the records and call ``process``. Only used for filters whose
        reserved fields the chain need not guard (``processors.reserved``).
        """
        return None


_NO_STATS: Mapping[str, int] = MappingProxyType({})


class OutputPlugin(Plugin):
    """Delivers batches of records to an external store.

    The sink worker calls, in this order: ``recover`` when it takes a partition (and after
    a broker error), ``backoff`` once per batch, ``write_batch`` until delivered,
    ``checkpoint`` (committed with the batch's acks), ``committed`` once that commit is in
    Redis.
    """

    Options: ClassVar[type[OutputOptions]]
    #: True when the target allows one writer only (a file): one worker owns all partitions.
    single_writer: ClassVar[bool] = False
    #: The output's own counters (es: requests, conflicts, ...), added to its lifecycle record.
    stats: Mapping[str, int] = _NO_STATS

    def __init__(self, options: OutputOptions, ctx: object) -> None:  # noqa: B027
        """Built once per sink worker thread; ``ctx`` is a ``sinks.OutputContext``."""

    @abstractmethod
    def write_batch(self, records: Sequence[Record]) -> Outcome:
        """Deliver ``records``; idempotent, so a redelivery after a crash writes nothing twice.

        ``records`` may be a ``tailrace.wire.JsonBatch``: it decodes them when indexed.
        """

    def recover(self, checkpoints: list[Mapping[bytes, bytes]]) -> None:  # noqa: B027
        """Return to the state of the last commit (the checkpoints hold what it recorded)."""

    def checkpoint(self) -> dict[str, str | int] | None:
        """What to record with the acks of the batch just delivered (None: nothing)."""
        return None

    def committed(self) -> None:  # noqa: B027
        """The last batch's commit is in Redis: what guarded it may be dropped."""

    def backoff(self) -> Backoff:
        """The delays between retries of one batch."""
        return Backoff(OUTPUT_RETRY_BASE_S, OUTPUT_RETRY_CAP_S)


class InputPlugin(Plugin):
    """Reads a source in batches; the agent loop commits them through the broker."""

    Options: ClassVar[type[InputOptions]]

    def __init__(self, options: InputOptions, **context: object) -> None:  # noqa: B027
        """Built once per configured input; ``context`` is what the agent hands over."""


P = TypeVar("P", bound=Plugin)


def _adopt(kind: str, cls: type, base: type, options_base: type[Options]) -> type[P]:
    """``cls`` as a ``base``: itself when it subclasses it, else a subclass of both."""
    for attr in ("name", "description", "Options"):
        if not hasattr(cls, attr):
            raise TypeError(f"{kind} plugin {cls!r} does not declare {attr!r}")
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, options_base)):
        raise TypeError(f"{kind} plugin {cls.__name__}: its Options must extend "
                        f"tailrace.options.{options_base.__name__}")
    if issubclass(cls, base):
        return cast(type[P], cls)
    try:
        # ``cls`` first: its own methods win; the base adds the no-op hooks it lacks.
        adopted = type(cls.__name__, (cls, base), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__})
    except TypeError as exc:  # a metaclass conflict
        raise TypeError(f"{kind} plugin {cls.__name__} cannot be adopted as a "
                        f"{base.__name__} ({exc}); declare it as a subclass of "
                        f"tailrace.plugins.{base.__name__}") from exc
    return cast(type[P], adopted)


class PluginTable(Mapping[str, type[P]]):
    """One kind's plugin classes by YAML name.

    A built-in plugin is listed by name with the module that defines it and imported at
    its first lookup (``table[name]``, ``get``): a process imports the plugins its config
    names, not every module of the three role packages (most of their import time at
    every start). Names, ``in`` and ``len`` import nothing; ``values()``/``items()``
    import every listed one (the reference, ``tailrace plugins``).
    """

    def __init__(self, kind: Kind, base: type, options_base: type[Options]) -> None:
        self.kind, self._base, self._options_base = kind, base, options_base
        #: A class, or ``"module:attr"`` of a built-in not imported yet.
        self._entries: dict[str, type[P] | str] = {}
        #: The class each registered one was given as (adopted classes are new classes).
        self._given: dict[str, type] = {}

    def __getitem__(self, name: str) -> type[P]:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            cls = getattr(importlib.import_module(module), attr)
            adopted: type[P] = _adopt(self.kind, cls, self._base, self._options_base)
            if adopted.name != name:
                raise TypeError(f"built-in {self.kind} plugin {entry} is listed as {name!r} "
                                f"but declares name {adopted.name!r}")
            self._given[name] = cls
            self._entries[name] = entry = adopted
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"PluginTable({self.kind}: {', '.join(self._entries)})"

    def add(self, classes: Iterable[type]) -> None:
        for cls in classes:
            adopted: type[P] = _adopt(self.kind, cls, self._base, self._options_base)
            name = adopted.name
            if isinstance(self._entries.get(name), str):
                _ = self[name]  # a built-in of that name: the same class is no conflict
            given = self._given.get(name)
            if given is not None and given is not cls:
                raise TypeError(f"two {self.kind} plugins are named {name!r}")
            if given is None:
                self._given[name] = cls
                self._entries[name] = adopted

    def add_builtin(self, where: Mapping[str, str]) -> None:
        for name, spec in where.items():
            if name in self._entries:
                raise TypeError(f"two {self.kind} plugins are named {name!r}")
            self._entries[name] = spec


def _table(kind: Kind, base: type, options_base: type[Options]) -> Callable[[], Any]:
    return lambda: PluginTable(kind, base, options_base)


@dataclass
class Registry:
    """Plugin classes by kind and YAML name (each a :class:`PluginTable`)."""

    inputs: PluginTable[InputPlugin] = field(
        default_factory=_table("inputs", InputPlugin, InputOptions))
    filters: PluginTable[FilterPlugin] = field(
        default_factory=_table("filters", FilterPlugin, FilterOptions))
    parsers: PluginTable[ParserPlugin] = field(
        default_factory=_table("parsers", ParserPlugin, ParserOptions))
    outputs: PluginTable[OutputPlugin] = field(
        default_factory=_table("outputs", OutputPlugin, OutputOptions))
    #: Whole-config checks a role package adds (the processors compile every parser's
    #: ``time_format``), run by the config loader with its own, so every problem shows at
    #: once. Each takes the Config and returns (absolute key path, message) pairs.
    checks: list[ConfigCheck] = field(default_factory=list)

    def table(self, kind: Kind) -> PluginTable[Any]:
        """The plugin classes of one kind, by name."""
        tables: dict[Kind, PluginTable[Any]] = {
            "inputs": self.inputs, "filters": self.filters,
            "parsers": self.parsers, "outputs": self.outputs}
        if kind not in tables:
            raise ValueError(f"unknown plugin kind {kind!r}")
        return tables[kind]

    def add(self, kind: Kind, classes: Iterable[type]) -> None:
        """Register ``classes`` as plugins of ``kind``.

        Raises:
            TypeError: a class lacks ``name``/``description``/``Options``, its ``Options``
                does not extend the kind's options base, or two classes share a name.
        """
        self.table(kind).add(classes)

    def add_builtin(self, kind: Kind, where: Mapping[str, str]) -> None:
        """Register built-in plugins of ``kind`` by name: ``{"grep": "module:Class"}``.

        Each is imported at its first lookup, and must declare the name it is listed as.
        """
        self.table(kind).add_builtin(where)

    def load_entry_points(self) -> None:
        """Add third-party plugins declared under the ``tailrace.*`` entry point groups."""
        # One look at the installed distributions for every group: each call with a group
        # reads them all again (~5-8 ms apiece, at every process start).
        found = entry_points()
        for kind, group in ENTRY_POINT_GROUPS.items():
            for ep in found.select(group=group):
                try:
                    cls = ep.load()
                except Exception as exc:  # a broken plugin must not stop the pipeline
                    log.error(
                        "plugin_load_error: entry point %s=%s in group %s failed to load: %s",
                        ep.name, ep.value, group, exc,
                    )
                    continue
                self.add(kind, [cls])

"""Turning raw batches into records and running them through the filter chain.

This is the processors' hot path, written for batches: the per-batch work (record id
prefix, metadata template, tag matching) is hoisted out of the per-line loop, and each
filter sees the whole batch at once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tailrace.broker import BROKER_ERRORS
from tailrace.config import Config, PluginConfig
from tailrace.logs import RateLimiter, event
from tailrace.outcome import FilterResult, Rejection
from tailrace.plugins import FilterPlugin, Record
from tailrace.ratelimit import RateLimits
from tailrace.record import Lines, id_prefix
from tailrace.tags import TagMatcher
from tailrace.wire import RawBatch

from .context import FilterContext
from .parsers.base import BoundParser
from .reserved import KEEPS_RESERVED, ReservedGuard, report_kept
from .safe_regex import WATCHDOG
from .stock import STOCK_PARSERS

__all__ = ["MAX_EMIT_DEPTH", "Chain", "ChainResult", "Parsers", "build_parsers", "lines_of",
           "records_from_batch"]

log = logging.getLogger(__name__)

#: How often a record may be re-emitted (rewrite_tag into rewrite_tag ...) before it stops.
MAX_EMIT_DEPTH = 4


class Parsers(Mapping[str, BoundParser]):
    """The pipeline's parsers by name: the config's, and the stock ones it does not replace.

    The config's are built at once (a bad one fails the start). A stock parser is built at
    its first lookup (a ``parser`` filter's build, or a pod's annotation in ``kubernetes``):
    building every stock one with its time formats cost every processor ~13 ms at start,
    for the one or two a config uses. Names and ``in`` never build anything.
    """

    def __init__(self, config: Config) -> None:
        self._registry = config.registry
        self._built: dict[str, BoundParser] = {
            n: BoundParser(pc) for n, pc in config.parsers.items()}
        self._stock: dict[str, dict[str, Any]] = {
            doc["name"]: doc for doc in STOCK_PARSERS
            if doc["name"] not in self._built and doc["format"] in self._registry.parsers}
        self._names = (*self._built, *self._stock)  # fixed: a lookup adds no name

    def __getitem__(self, name: str) -> BoundParser:
        found = self._built.get(name)
        if found is None:
            doc = self._stock[name]  # KeyError: no such parser
            cls = self._registry.parsers[doc["format"]]
            pc = PluginConfig("parsers", -1, cls, cls.Options.model_validate(doc), name)
            # Two threads building the same one at once both get an equal parser.
            found = self._built[name] = BoundParser(pc)
        return found

    def get(self, name: str, default: Any = None, /) -> Any:
        """``self[name]``, else ``default``; a built one at dict speed (``kubernetes``
        looks up a pod's annotated parser per record: Mapping.get is two Python frames,
        and a KeyError raised and caught for an unknown name)."""
        found = self._built.get(name)
        if found is not None:
            return found
        return self[name] if name in self._stock else default

    def __contains__(self, name: object) -> bool:
        return name in self._built or name in self._stock

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def build_parsers(config: Config) -> Parsers:
    """Stock parsers overlaid with the config's ``parsers:`` (the config wins)."""
    return Parsers(config)


def _meta_template(batch: RawBatch, path_key: str | None) -> dict[str, Any]:
    """Metadata every record of the batch carries; dotted keys become nested maps."""
    tmpl: dict[str, Any] = {}
    for k, v in batch.meta.items():
        if "." in k:
            head, _, tail = k.partition(".")
            sub = tmpl.setdefault(head, {})
            if isinstance(sub, dict):
                sub[tail] = v
        else:
            tmpl[k] = v
    if path_key:
        tmpl[path_key] = batch.path
    return tmpl


def lines_of(batch: RawBatch, path_key: str | None, now: float) -> Lines:
    """The batch's lines, decoded (invalid UTF-8 replaced with U+FFFD), with their times,
    ids, tag and metadata (see :class:`tailrace.record.Lines`)."""
    if batch.time is not None:
        now = batch.time  # the agent's read time: a redone batch gives the same records
    lines, offsets = batch.lines, batch.offsets
    if len(lines) != len(offsets):
        raise ValueError(f"batch has {len(lines)} lines but {len(offsets)} offsets")
    invalid: dict[int, bytes] = {}  # lines that are not valid UTF-8
    try:
        texts = list(map(bytes.decode, lines))
    except UnicodeDecodeError:
        texts = []
        for i, ln in enumerate(lines):
            try:
                texts.append(ln.decode())
            except UnicodeDecodeError:
                texts.append(ln.decode("utf-8", "replace"))
                invalid[i] = ln
    times = [t or now for t in batch.times] if batch.times else [now] * len(lines)
    return Lines(texts, times, offsets, id_prefix(batch.agent, batch.file), batch.tag,
                 _meta_template(batch, path_key), batch.streams, invalid)


def records_from_batch(batch: RawBatch, path_key: str | None, now: float) -> tuple[
        list[Record], int]:
    """One record per line: ``log``, ``time``, metadata, ``_id``, ``_tag``.

    Returns the records and how many lines had invalid UTF-8 (replaced with U+FFFD).
    """
    lines = lines_of(batch, path_key, now)
    return lines.records(), len(lines.invalid)


@dataclass
class ChainResult:
    records: list[Record]
    rejected: list[tuple[str, Rejection]] = field(default_factory=list)  # (filter id, rejection)
    invalid_utf8: int = 0
    #: What the filters counted in this batch, summed by name (``unmatched``, ``throttled``,
    #: ``regex_timeouts``, ``errors``, ...).
    counters: Counter[str] = field(default_factory=Counter)


@dataclass
class _Step:
    id: str
    matcher: TagMatcher
    plugin: FilterPlugin
    counters: Counter[str]


class Chain:
    """The configured filters, in order, each applied to the records its match selects.

    Guarantees: a filter that raises on a batch is re-run record by record, and only the
    records it still fails on are rejected (dead-lettered with the exception), so one bad
    record never fails a batch. Broker errors (from a filter's shared service) propagate:
    the worker retries the batch. Records a filter re-emits (``rewrite_tag``) run through
    the chain again from the first filter, skipping the one that emitted them, and follow
    the batch's other records.

    Args:
        config: the pipeline.
        rate_limits: shared rate limits for ``throttle`` (default: this process only).
    """

    def __init__(self, config: Config, *, rate_limits: RateLimits | None = None) -> None:
        base = FilterContext(parsers=build_parsers(config), base_dir=config.base_dir)
        if rate_limits is not None:
            base.rate_limits = rate_limits
        self.steps: list[_Step] = []
        for pc in config.filters:
            o = pc.options
            ctx = base.for_filter(pc.id)
            plugin = pc.plugin(o, ctx)
            self.steps.append(_Step(pc.id, TagMatcher(o.match, o.match_regex), plugin,
                                    ctx.counters))
        self.path_keys = {pc.id: getattr(pc.options, "path_key", None) for pc in config.inputs}
        #: Counters per filter id since the chain was built (for tests and status).
        self.totals: dict[str, Counter[str]] = {s.id: Counter() for s in self.steps}
        self._limiter = RateLimiter()
        # Filters that could change _id/_tag are checked per batch (processors.reserved);
        # the value says whether _tag is kept too (not for a filter that changes tags).
        self._guards = {s.id: not s.plugin.changes_tags
                        for pc, s in zip(config.filters, self.steps, strict=True)
                        if pc.name not in KEEPS_RESERVED}

    @property
    def filters(self) -> list[tuple[str, TagMatcher, FilterPlugin]]:
        return [(s.id, s.matcher, s.plugin) for s in self.steps]

    def run(self, batch: RawBatch) -> ChainResult:
        """Records of ``batch`` after every filter; regex budgets are enforced meanwhile."""
        with WATCHDOG.armed():
            lines = lines_of(batch, self.path_keys.get(batch.input, "path"), time.time())
            result = ChainResult([], invalid_utf8=len(lines.invalid))
            first = self._from_lines(lines)
            records = lines.records() if first is None else []
            result.records = self._pass(records, batch.tag, -1, 0, result, first)
        for step in self.steps:
            if step.counters:
                result.counters.update(step.counters)
                self.totals[step.id].update(step.counters)
                step.counters.clear()
        return result

    def run_records(self, records: list[Record]) -> ChainResult:
        """Run already-built records (mixed tags allowed) through the chain."""
        result = ChainResult(records)
        with WATCHDOG.armed():
            result.records = self._pass(records, None, -1, 0, result)
        for step in self.steps:
            result.counters.update(step.counters)
            self.totals[step.id].update(step.counters)
            step.counters.clear()
        return result

    def _from_lines(self, lines: Lines) -> FilterResult | None:
        """The first filter's result built from the lines (``process_lines``), or None:
        the records are built and every filter runs on them."""
        if not self.steps or not lines.texts:
            return None
        step = self.steps[0]
        if step.id in self._guards or not step.matcher(lines.tag):
            return None
        saved = Counter(step.counters)
        try:
            return step.plugin.process_lines(lines)
        except BROKER_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - the general path takes the batch over
            step.counters.clear()
            step.counters.update(saved)
            if self._limiter.allow(f"{step.id}:lines"):
                event(log, logging.ERROR, "processor_filter_error",
                      f"filter {step.id!r} raised {exc!r} building records from "
                      f"{len(lines.texts)} lines; running it on the records instead",
                      filter=step.id)
            return None

    def _pass(self, records: list[Record], tag: str | None, skip: int, depth: int,
              result: ChainResult, first: FilterResult | None = None) -> list[Record]:
        """Run the filters over ``records``; ``tag`` is set while they all share it.

        ``first``: the first filter's result, already made from the batch's lines."""
        emitted: list[tuple[int, list[Record]]] = []
        for i, step in enumerate(self.steps):
            if first is not None and i == 0:
                fr = first  # its matcher passed on the batch's tag (_from_lines)
            elif not records:
                break
            elif i == skip:
                continue
            elif tag is not None:
                if not step.matcher(tag):
                    continue
                fr = self._call(step, records)
            else:
                fr = self._mixed(step, records)
            records = fr.records
            if (tag is not None and step.plugin.changes_tags
                    and any(r["_tag"] != tag for r in records)):
                tag = None
            if fr.rejected:
                result.rejected.extend((step.id, rej) for rej in fr.rejected)
            if step.plugin.emits:
                more = step.plugin.take_emitted()
                if more:
                    emitted.append((i, more))
        for i, more in emitted:
            if depth >= MAX_EMIT_DEPTH:
                self.steps[i].counters["emit_depth_exceeded"] += len(more)
                records.extend(more)
                continue
            records.extend(self._pass(more, None, i, depth + 1, result))
        return records

    def _mixed(self, step: _Step, records: list[Record]) -> FilterResult:
        """Mixed tags: filter each run of matching records in place, keeping the order."""
        matcher = step.matcher
        merged: list[Record] = []
        rejected: list[Rejection] = []
        run: list[Record] = []
        for r in records:
            if matcher(r["_tag"]):
                run.append(r)
                continue
            if run:
                part = self._call(step, run)
                merged.extend(part.records)
                rejected.extend(part.rejected)
                run = []
            merged.append(r)
        if run:
            part = self._call(step, run)
            merged.extend(part.records)
            rejected.extend(part.rejected)
        return FilterResult(merged, rejected)

    def _call(self, step: _Step, records: list[Record]) -> FilterResult:
        keep_tag = self._guards.get(step.id)
        guard = ReservedGuard(records, keep_tag) if keep_tag is not None else None
        try:
            fr = step.plugin.process(records)
        except BROKER_ERRORS:
            raise
        except Exception as exc:  # a filter bug or bad record must not fail the batch
            fr = self._isolate(step, records, exc)
        if guard is not None:
            report_kept(step.id, guard.restore(fr), step.counters, self._limiter)
        return fr

    def _isolate(self, step: _Step, records: list[Record], first: Exception) -> FilterResult:
        """Re-run a failed filter record by record; reject only the records that fail."""
        if self._limiter.allow(step.id):
            event(log, logging.ERROR, "processor_filter_error",
                  f"filter {step.id!r} raised {first!r} on a batch of {len(records)} records; "
                  "retrying them one by one, failing records go to the dead-letter stream",
                  filter=step.id)
        if step.plugin.emits:
            step.plugin.take_emitted()  # copies from the failed call; the retries re-emit
        out: list[Record] = []
        rejected: list[Rejection] = []
        for r in records:
            try:
                part = step.plugin.process([r])
            except BROKER_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - isolating the one bad record
                step.counters["errors"] += 1
                rejected.append(Rejection(r, f"filter {step.id!r} raised {exc!r}"))
                continue
            out.extend(part.records)
            rejected.extend(part.rejected)
        return FilterResult(out, rejected)

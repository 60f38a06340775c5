"""Turning raw batches into records and running them through the filter chain.

This is the processors' hot path, written for batches: the per-batch work (record id
prefix, metadata template, tag matching) is hoisted out of the per-line loop, and each
filter sees the whole batch at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tailrace.config import Config, PluginConfig
from tailrace.outcome import Rejection
from tailrace.plugins import Record
from tailrace.record import id_prefix
from tailrace.tags import TagMatcher
from tailrace.wire import RawBatch

from .context import FilterContext
from .parsers.base import BoundParser
from .stock import STOCK_PARSERS

__all__ = ["Chain", "ChainResult", "build_parsers", "records_from_batch"]


def build_parsers(config: Config) -> dict[str, BoundParser]:
    """Stock parsers overlaid with the config's ``parsers:`` (the config wins)."""
    parsers: dict[str, BoundParser] = {}
    registry = config.registry
    for doc in STOCK_PARSERS:
        cls = registry.parsers.get(doc["format"])
        if cls is None:
            continue
        opts = cls.Options.model_validate(doc)
        parsers[doc["name"]] = BoundParser(PluginConfig("parsers", -1, cls, opts, doc["name"]))
    for name, pc in config.parsers.items():
        parsers[name] = BoundParser(pc)
    return parsers


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


def records_from_batch(batch: RawBatch, path_key: str | None, now: float) -> tuple[
        list[Record], int]:
    """One record per line: ``log``, ``time``, metadata, ``_id``, ``_tag``.

    Returns the records and how many lines had invalid UTF-8 (replaced with U+FFFD).
    """
    prefix = id_prefix(batch.agent, batch.file)
    tag = batch.tag
    tmpl = _meta_template(batch, path_key)
    nested = [k for k, v in tmpl.items() if isinstance(v, dict)]
    times = batch.times
    streams = batch.streams
    invalid = 0
    out: list[Record] = []
    append = out.append
    for i, (line, off) in enumerate(zip(batch.lines, batch.offsets, strict=True)):
        try:
            text = line.decode()
        except UnicodeDecodeError:
            text = line.decode("utf-8", "replace")
            invalid += 1
        rec = {"log": text, "time": times[i] if times and times[i] else now,
               "_id": f"{prefix}{off:x}", "_tag": tag}
        if tmpl:
            rec.update(tmpl)
            for k in nested:
                rec[k] = dict(tmpl[k])  # each record owns its nested maps
        if streams is not None:
            rec["stream"] = streams[i]
        append(rec)
    return out, invalid


@dataclass
class ChainResult:
    records: list[Record]
    rejected: list[tuple[str, Rejection]] = field(default_factory=list)  # (filter id, rejection)
    invalid_utf8: int = 0


class Chain:
    """The configured filters, in order, each applied to the records its match selects."""

    def __init__(self, config: Config) -> None:
        ctx = FilterContext(parsers=build_parsers(config))
        self.filters: list[tuple[str, TagMatcher, Any]] = []
        for pc in config.filters:
            o = pc.options
            self.filters.append(
                (pc.id, TagMatcher(o.match, o.match_regex), pc.plugin(o, ctx))
            )
        self.path_keys = {pc.id: getattr(pc.options, "path_key", None) for pc in config.inputs}

    def run(self, batch: RawBatch) -> ChainResult:
        records, invalid = records_from_batch(
            batch, self.path_keys.get(batch.input, "path"), time.time()
        )
        result = ChainResult(records, invalid_utf8=invalid)
        tag = batch.tag
        uniform = True  # every record has the batch's tag until a filter re-tags some
        for fid, matcher, flt in self.filters:
            records = result.records
            if not records:
                break
            if uniform:
                if not matcher(tag):
                    continue
                fr = flt.process(records)
                result.records = fr.records
                if getattr(flt, "changes_tags", False):
                    uniform = all(r["_tag"] == tag for r in fr.records)
            else:
                # Mixed tags (e.g. after rewrite_tag): filter each run of matching records
                # in place, so output order still follows input order.
                merged: list[Record] = []
                rejected: list[Rejection] = []
                run: list[Record] = []
                for r in records:
                    if matcher(r["_tag"]):
                        run.append(r)
                        continue
                    if run:
                        part = flt.process(run)
                        merged.extend(part.records)
                        rejected.extend(part.rejected)
                        run = []
                    merged.append(r)
                if run:
                    part = flt.process(run)
                    merged.extend(part.records)
                    rejected.extend(part.rejected)
                result.records = merged
                result.rejected.extend((fid, rej) for rej in rejected)
                continue
            result.rejected.extend((fid, rej) for rej in fr.rejected)
        return result

"""Helpers of the processor tests: configs with the processors' plugins, raw batches."""

from __future__ import annotations

from typing import Any

from processors.plugins import FILTERS, PARSERS
from tailrace.config import Config, parse_config
from tailrace.plugins import Registry
from tailrace.wire import RawBatch

__all__ = ["batch", "config", "records", "registry", "run", "strip"]


def registry() -> Registry:
    """The processors' built-in filters and parsers (no entry points, no other role)."""
    reg = Registry()
    reg.add_builtin("filters", FILTERS)
    reg.add_builtin("parsers", PARSERS)
    return reg


def config(text: str, filename: str = "test.yaml", **kw: Any) -> Config:
    return parse_config(text, filename, registry(), **kw)


def batch(lines: list[bytes | str], *, tag: str = "web.access", offset: int = 0,
          meta: dict[str, str] | None = None, file: str = "file-1",
          streams: list[str] | None = None) -> RawBatch:
    """A raw batch of ``lines`` from one file, with consecutive offsets from ``offset``."""
    raw = [ln.encode() if isinstance(ln, str) else ln for ln in lines]
    offsets, pos = [], offset
    for ln in raw:
        offsets.append(pos)
        pos += len(ln) + 1
    return RawBatch(agent="agent-1", input="tail.0", tag=tag, path="/var/log/x.log", file=file,
                    start=offset, end=pos, lines=raw, offsets=offsets, meta=meta or {},
                    streams=streams)


def records(*docs: dict[str, Any], tag: str = "test") -> list[dict[str, Any]]:
    """Records as the chain makes them: the given fields plus ``_id``, ``_tag``, ``time``."""
    return [{**d, "time": 1.0, "_id": f"id-{i}", "_tag": tag} for i, d in enumerate(docs)]


def strip(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without the reserved keys the chain adds, to compare with documented output."""
    return [{k: v for k, v in r.items() if k not in ("_id", "_tag", "time")} for r in recs]


def run(filters_yaml: str, recs: list[dict[str, Any]], **kw: Any) -> Any:
    """Run records through a chain of the given ``filters:`` YAML; returns the ChainResult."""
    from processors.chain import Chain

    text = "pipeline:\n  filters:\n" + "".join(
        f"    {line}\n" for line in filters_yaml.strip("\n").splitlines())
    return Chain(config(text, **kw)).run_records(recs)

"""The ``python`` filter: an operator's own function, by import path, for what no built-in does.

``call: package.module:function`` (or ``package.module.function``) is imported when the
config is checked, so a typo is a config error with the file and line. The function gets
one record (a dict, which it may change in place) and returns:

* the record (or another dict) to keep it; ``_id`` and ``_tag`` are the pipeline's: they
  are restored if dropped or changed (counted as ``reserved_kept`` and logged once per
  batch), since two records with one ``_id`` would be one record to an idempotent output;
* ``None`` to drop it;
* a list of dicts to split it: the first keeps the ``_id``, the n-th (n > 0) gets
  ``<_id>-<n>``, so ids stay deterministic.

With ``batch: true`` it gets the list of records and returns the list to keep (new dicts
carry an input record's ``_id``, or come one per input record; others are dead-lettered). ``args``
are passed as keyword arguments. An exception on one record sends that record to the
dead-letter stream with the exception as reason; the rest of the batch goes on.
``path`` adds a folder (relative to the config file) to ``sys.path`` first.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from tailrace.config import Config
from tailrace.logs import RateLimiter
from tailrace.options import FilterOptions, Problem
from tailrace.outcome import FilterResult, Rejection
from tailrace.plugins import FilterPlugin, Record

from ..context import FilterContext
from ..reserved import report_kept

__all__ = ["PythonFilter", "PythonFilterOptions", "load_callable"]


class PythonFilterOptions(FilterOptions):
    call: str = Field(
        pattern=r"^[A-Za-z_][\w.]*[:.][A-Za-z_]\w*$",
        description="Import path of the function: `package.module:function`.",
    )
    batch: bool = Field(False, description="Call it once per batch with the list of records.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments passed on every call."
    )
    path: str | None = Field(
        None, description="Folder to add to `sys.path` before importing (relative to the "
        "config file)."
    )

    def check_config(self, config: Config) -> list[Problem]:
        path = config.resolve_path(self.path) if self.path else None
        try:
            load_callable(self.call, path)
        except ValueError as exc:
            return [(("call",), str(exc))]
        return []


def load_callable(spec: str, path: Path | None = None) -> Callable[..., Any]:
    """Import ``module:attr`` (or ``module.attr``).

    Raises:
        ValueError: the module or attribute cannot be imported, or is not callable.
    """
    if path is not None and str(path) not in sys.path:
        sys.path.insert(0, str(path))
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the operator's module may fail in any way on import
        raise ValueError(f"cannot import module {module_name!r} for {spec!r}: {exc!r}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"{spec!r} is a {type(fn).__name__}, not a function")
    return fn  # type: ignore[no-any-return]


class PythonFilter(FilterPlugin):
    name: ClassVar[str] = "python"
    description: ClassVar[str] = "Run an operator's own Python function on each record or batch."
    Options: ClassVar[type[PythonFilterOptions]] = PythonFilterOptions
    # Not `changes_tags`: _id and _tag are the pipeline's (processors.reserved); re-tag
    # with rewrite_tag.

    def __init__(self, options: PythonFilterOptions, ctx: FilterContext) -> None:
        path = (ctx.base_dir / options.path) if options.path else None
        self.fn = load_callable(options.call, path)
        self.call = options.call
        self.batch = options.batch
        self.args = options.args
        self.counters = ctx.counters
        self.filter_id = ctx.filter_id
        self._limiter = RateLimiter()

    def process(self, records: list[Record]) -> FilterResult:
        # The records' _id/_tag are kept whatever the code does: in place the chain puts
        # them back (processors.reserved); here, on the dicts the code returns.
        if self.batch:
            return self._batch(records)
        fn, args = self.fn, self.args
        out: list[Record] = []
        rejected: list[Rejection] = []
        kept = 0
        for r in records:
            rid, tag = r["_id"], r["_tag"]
            try:
                res = fn(r, **args) if args else fn(r)
            except Exception as exc:  # the operator's code may raise anything: dead-letter
                self.counters["errors"] += 1
                rejected.append(Rejection(r, f"python filter {self.call!r} raised {exc!r}"))
                continue
            if res is None:
                continue
            if isinstance(res, dict):
                if res.get("_id", rid) != rid or res.get("_tag", tag) != tag:
                    kept += 1
                res["_id"], res["_tag"] = rid, tag
                out.append(res)
            elif isinstance(res, list) and all(isinstance(x, dict) for x in res):
                for n, x in enumerate(res):
                    x["_id"] = rid if n == 0 else f"{rid}-{n}"
                    if x.get("_tag", tag) != tag:
                        kept += 1
                    x["_tag"] = tag
                    out.append(x)
            else:
                self.counters["errors"] += 1
                rejected.append(Rejection(r, f"python filter {self.call!r} returned "
                                             f"{type(res).__name__}; expected a dict, a list "
                                             "of dicts or None"))
        if kept:
            report_kept(self.filter_id, kept, self.counters, self._limiter)
        return FilterResult(out, rejected)

    def _batch(self, records: list[Record]) -> FilterResult:
        """Batch mode: new dicts must carry an ``_id`` of the batch (copies); any other
        is given the id of the record at its position when the code returned one record
        per input, else dead-lettered (its line could not be told)."""
        ids = [(r["_id"], r["_tag"]) for r in records]
        result = self.fn(records, **self.args)
        if not isinstance(result, list):
            raise TypeError(f"python filter {self.call!r} returned "
                            f"{type(result).__name__}, expected a list of records")
        originals = {id(r) for r in records}
        known = dict(ids)
        out: list[Record] = []
        rejected: list[Rejection] = []
        kept = 0
        for i, x in enumerate(result):
            if id(x) in originals or not isinstance(x, dict):
                out.append(x)  # an input record: the chain restores it in place
                continue
            rid = x.get("_id")
            if rid in known:
                if x.get("_tag") != known[rid]:
                    kept += 1
                    x["_tag"] = known[rid]
            elif len(result) == len(records):
                kept += 1
                x["_id"], x["_tag"] = ids[i]
            else:
                self.counters["errors"] += 1
                rejected.append(Rejection(x, f"python filter {self.call!r} returned a new "
                                             "record without the _id of an input record; "
                                             "copy _id and _tag into new records"))
                continue
            out.append(x)
        if kept:
            report_kept(self.filter_id, kept, self.counters, self._limiter)
        return FilterResult(out, rejected)

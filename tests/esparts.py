"""Pieces of ``tests/esserver.py``: the faults it can be told to inject, ``filter_path``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fault", "apply_filter_path"]


@dataclass
class Fault:
    """A misbehaviour, for the next ``times`` requests (or ids), ``None`` = always.

    Request faults: ``status`` (answer it without indexing), ``drop`` (``before``: close the
    connection without indexing; ``after``: index, then close without an answer),
    ``delay_s`` (index, then wait before answering). Item faults: ``item_status`` for the
    documents in ``ids`` (each id ``times`` times) or every ``every``-th item.
    """

    status: int | None = None
    item_status: int | None = None
    error_type: str = ""
    reason: str = "injected by esserver"
    ids: list[str] | None = None
    every: int = 0
    delay_s: float = 0.0
    drop: str = ""
    times: int | None = None
    _per_id: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def is_item(self) -> bool:
        return self.item_status is not None

    def take(self) -> bool:
        """One request firing; False once exhausted."""
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True

    def take_item(self, doc_id: str | None, position: int) -> bool:
        if self.ids is not None:
            if doc_id not in self.ids:
                return False
            if self.times is None:
                return True
            used = self._per_id.get(doc_id, 0)
            if used >= self.times:
                return False
            self._per_id[doc_id] = used + 1
            return True
        if self.every and (position + 1) % self.every != 0:
            return False
        return self.take()


def _compile_filter(filter_path: str) -> dict[str, Any]:
    """``a.b,a.*.c`` -> ``{"a": {"b": {}, "*": {"c": {}}}}`` (an empty dict: keep all)."""
    tree: dict[str, Any] = {}
    for path in filter_path.split(","):
        node = tree
        for part in path.split("."):
            if part:
                node = node.setdefault(part, {})
        node.clear()
        node[""] = True
    return tree


def _keep(node: Any, tree: dict[str, Any]) -> Any:
    if "" in tree:
        return node
    if isinstance(node, list):
        kept = [_keep(x, tree) for x in node]
        return [x for x in kept if x is not _NONE]
    if not isinstance(node, dict):
        return _NONE
    out = {}
    star = tree.get("*")
    for key, value in node.items():
        sub_tree = tree.get(key)
        if sub_tree is None:
            sub_tree = star
        elif star is not None:
            sub_tree = {**star, **sub_tree}
        if sub_tree is None:
            continue
        sub = _keep(value, sub_tree)
        if sub is not _NONE and sub != {} and sub != []:
            out[key] = sub
    return out if out else _NONE


def apply_filter_path(doc: Any, filter_path: str | None) -> Any:
    """Elasticsearch's ``filter_path``: keep only the listed dotted paths (``*`` matches a key)."""
    if not filter_path:
        return doc
    tree = _FILTERS.get(filter_path)
    if tree is None:
        tree = _FILTERS[filter_path] = _compile_filter(filter_path)
    result = _keep(doc, tree)
    return {} if result is _NONE else result


_NONE = object()
_FILTERS: dict[str, dict[str, Any]] = {}

"""Fluent Bit's record accessor: ``log``, ``$log``, ``$kubernetes['labels']['app']``.

A key without ``$`` (or ``$name`` without brackets) is one top-level key, dots and all
(``Mem.total`` is a key, as in Fluent Bit). ``$a['b']["c"]`` walks nested maps. Parsed once
at build time into an :class:`Accessor`; top-level keys take a fast path.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MISSING", "Accessor", "accessor"]

_PART = re.compile(r"""\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]|\[\s*(\d+)\s*\]""")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: What :meth:`Accessor.get` returns for a key that is not there.
MISSING: Any = _Missing()


class Accessor:
    """Get, set and delete one (possibly nested) key of a record."""

    __slots__ = ("head", "path", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        key = text[1:] if text.startswith("$") else text
        if not text.startswith("$") or "[" not in key:
            self.head = key
            self.path: tuple[str | int, ...] = ()
            return
        head, _, rest = key.partition("[")
        rest = "[" + rest
        parts: list[str | int] = []
        pos = 0
        for m in _PART.finditer(rest):
            if m.start() != pos:
                break
            pos = m.end()
            a, b, idx = m.groups()
            parts.append(int(idx) if idx is not None else (a if a is not None else b or ""))
        if pos != len(rest) or not head:
            raise ValueError(f"invalid record accessor {text!r}; expected $key or "
                             "$key['sub']['subsub']")
        self.head = head
        self.path = tuple(parts)

    @property
    def nested(self) -> bool:
        return bool(self.path)

    def get(self, record: dict[str, Any]) -> Any:
        """The value, or :data:`MISSING`."""
        cur: Any = record.get(self.head, MISSING)
        for part in self.path:
            if isinstance(cur, dict):
                cur = cur.get(part, MISSING)
            elif isinstance(cur, list) and isinstance(part, int) and -len(cur) <= part < len(cur):
                cur = cur[part]
            else:
                return MISSING
        return cur

    def set(self, record: dict[str, Any], value: Any) -> None:
        """Set the value, creating intermediate maps (a non-map in the way is replaced)."""
        if not self.path:
            record[self.head] = value
            return
        cur = record.get(self.head)
        if not isinstance(cur, dict):
            cur = record[self.head] = {}
        for part in self.path[:-1]:
            nxt = cur.get(part)
            if not isinstance(nxt, dict):
                nxt = cur[part] = {}
            cur = nxt
        cur[self.path[-1]] = value

    def delete(self, record: dict[str, Any]) -> Any:
        """Remove the key; returns the old value or :data:`MISSING`."""
        if not self.path:
            return record.pop(self.head, MISSING)
        cur: Any = record.get(self.head)
        for part in self.path[:-1]:
            cur = cur.get(part) if isinstance(cur, dict) else None
        if isinstance(cur, dict):
            return cur.pop(self.path[-1], MISSING)
        return MISSING


def accessor(text: str) -> Accessor:
    """Parse a record accessor (raises ValueError with the expected form)."""
    return Accessor(text.strip())

"""The ``modify`` filter's rules and conditions, compiled once into small closures."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from tailrace.plugins import Record

from ..accessor import MISSING, accessor
from ..safe_regex import RegexTimeout, SafePattern
from ._fluent import wildcard

__all__ = ["CONDITIONS", "OPERATIONS", "compile_condition", "compile_rule", "parse_items"]

#: operation -> number of parameters
OPERATIONS: dict[str, int] = {
    "set": 2, "add": 2, "remove": 1, "remove_wildcard": 1, "remove_regex": 1, "rename": 2,
    "hard_rename": 2, "copy": 2, "hard_copy": 2, "move_to_start": 1, "move_to_end": 1,
}
#: condition -> number of parameters
CONDITIONS: dict[str, int] = {
    "key_exists": 1, "key_does_not_exist": 1, "a_key_matches": 1, "no_key_matches": 1,
    "key_value_equals": 2, "key_value_does_not_equal": 2, "key_value_matches": 2,
    "key_value_does_not_match": 2, "matching_keys_have_matching_values": 2,
    "matching_keys_do_not_have_matching_values": 2,
}
_RESERVED = frozenset(("_id", "_tag"))
_PROTECTED = frozenset(("_id", "_tag", "time"))  # never touched by wildcard/regex rules

Rule = Callable[[Record], None]


def parse_items(op: str, value: Any) -> list[tuple[Any, ...]]:
    """One operation's entries: a map, a ``"KEY VALUE"`` string, or a list of either."""
    arity = OPERATIONS[op]
    items = value if isinstance(value, list) else [value]
    out: list[tuple[Any, ...]] = []
    for item in items:
        if isinstance(item, tuple):
            out.append(item)
        elif isinstance(item, dict) and arity == 2:
            out.extend((str(k), v) for k, v in item.items())
        elif isinstance(item, str) and arity == 1:
            if not item.strip():
                raise ValueError(f"{op}: expected a key, got an empty string")
            out.append((item.strip(),))
        elif isinstance(item, str):
            parts = item.strip().split(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{op}: expected 'KEY VALUE', got {item!r}")
            out.append((parts[0], parts[1]))
        elif isinstance(item, list) and len(item) == arity:
            out.append(tuple(item))
        else:
            form = "KEY" if arity == 1 else "'KEY VALUE' or {KEY: VALUE}"
            raise ValueError(f"{op}: expected {form}, got {item!r}")
    return out


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def _search(rx: str, counters: Counter[str] | None) -> Callable[[str], bool]:
    search = SafePattern(rx).search

    def hit(text: str) -> bool:
        try:
            return search(text) is not None
        except RegexTimeout:
            if counters is not None:
                counters["regex_timeouts"] += 1
            return False

    return hit


def compile_rule(op: str, args: tuple[Any, ...], counters: Counter[str] | None = None) -> Rule:
    """A function applying one rule to a record in place (raises ValueError when invalid)."""
    if op not in OPERATIONS:
        raise ValueError(f"unknown modify rule {op!r}; expected one of: {', '.join(OPERATIONS)}")
    if len(args) != OPERATIONS[op]:
        raise ValueError(f"{op}: expected {OPERATIONS[op]} parameter(s), got {list(args)!r}")
    if op in ("remove_wildcard", "move_to_start", "move_to_end", "remove_regex"):
        pattern = str(args[0])
        if op == "remove_regex":
            try:
                rx = SafePattern(pattern)
            except re.error as exc:
                raise ValueError(f"remove_regex: invalid regex {pattern!r}: {exc}") from None
            hit = _search(rx.pattern, counters)
        else:
            hit = wildcard(pattern).match  # type: ignore[assignment]
        return _key_set_rule(op, hit)
    key = accessor(str(args[0]))
    names = [str(a) for a in (args if op != "set" and op != "add" else args[:1])]
    for n in names:
        if accessor(n).head in _RESERVED and not accessor(n).path:
            raise ValueError(f"{op}: the reserved key {n!r} cannot be changed")
    if op in ("remove", "rename", "hard_rename") and key.head == "time" and not key.path:
        raise ValueError(f"{op}: 'time' is the record's timestamp and cannot be removed")
    if op in ("set", "add"):
        value = args[1]
        if op == "set":
            return lambda r: key.set(r, value)
        return lambda r: key.set(r, value) if key.get(r) is MISSING else None
    if op == "remove":
        def remove(r: Record) -> None:
            key.delete(r)
        return remove
    dst = accessor(str(args[1]))
    hard = op.startswith("hard_")
    move = op.endswith("rename")

    def transfer(r: Record) -> None:
        v = key.get(r)
        if v is MISSING or (not hard and dst.get(r) is not MISSING):
            return
        if move:
            key.delete(r)
        dst.set(r, v)

    return transfer


def _key_set_rule(op: str, hit: Callable[[str], Any]) -> Rule:
    def matching(r: Record) -> list[str]:
        return [k for k in r if k not in _PROTECTED and hit(k)]

    if op in ("remove_wildcard", "remove_regex"):
        def remove(r: Record) -> None:
            for k in matching(r):
                del r[k]
        return remove

    def move(r: Record) -> None:
        keys = matching(r)
        if not keys:
            return
        moved = {k: r.pop(k) for k in keys}
        if op == "move_to_end":
            r.update(moved)
            return
        rest = dict(r)
        r.clear()
        r.update(moved)
        r.update(rest)

    return move


def compile_condition(name: str, args: tuple[str, ...],
                      counters: Counter[str] | None = None) -> Callable[[Record], bool]:
    """A predicate for one of Fluent Bit's modify conditions (raises ValueError when invalid)."""
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; expected one of: {', '.join(CONDITIONS)}")
    if len(args) != CONDITIONS[name]:
        raise ValueError(f"condition {name}: expected {CONDITIONS[name]} parameter(s), "
                         f"got {list(args)!r}")
    for rx in (args if name.startswith(("a_key", "no_key", "matching")) else args[1:]
               if name.endswith(("matches", "match")) else ()):
        try:
            re.compile(rx)
        except re.error as exc:
            raise ValueError(f"condition {name}: invalid regex {rx!r}: {exc}") from None
    if name in ("a_key_matches", "no_key_matches"):
        hit = _search(args[0], counters)
        want = name == "a_key_matches"
        return lambda r: any(hit(k) for k in r) is want
    if name.startswith("matching_keys"):
        khit, vhit = _search(args[0], counters), _search(args[1], counters)
        want_v = name == "matching_keys_have_matching_values"
        return lambda r: all(vhit(_text(v)) is want_v for k, v in r.items() if khit(k))
    key = accessor(args[0])
    if name == "key_exists":
        return lambda r: key.get(r) is not MISSING
    if name == "key_does_not_exist":
        return lambda r: key.get(r) is MISSING
    if name in ("key_value_equals", "key_value_does_not_equal"):
        expected = args[1]
        equal = name == "key_value_equals"

        def compare(r: Record) -> bool:
            v = key.get(r)
            return v is not MISSING and (_text(v) == expected) is equal

        return compare
    vhit = _search(args[1], counters)
    want = name == "key_value_matches"

    def matches(r: Record) -> bool:
        v = key.get(r)
        return v is not MISSING and vhit(_text(v)) is want

    return matches

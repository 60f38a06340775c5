"""Compile a regex with its lazy single-character loops rewritten to skip, same results.

Why: the stock nginx and apache patterns (Fluent Bit's, which users copy) hold
``(?<path>[^"]*?)(?: +\\S*)?"``. ``re`` runs a lazy loop like ``[^"]*?`` one character at
a time and tries the whole rest of the pattern after each: when what follows is a group
(not a plain character, for which ``re`` has a fast check), that is a recursive match
attempt per character of the path, ~2.4 µs of the 4 µs the nginx pattern costs per line.

The rewrite: a lazy loop ``C*?`` over one character class ``C``, where everything that
can follow it must start with a character of a small known set ``F``, can only end
before a character of ``F``; every other end fails on its first character. So

    C*?   ->   [C-F]*+ (?:[C&F][C-F]*+)*?       (and C+? -> C followed by that)

tries exactly the ends the original would have succeeded at, in the same order (each
iteration moves to the next character of ``F``), and therefore gives the same match and
the same groups on every text: a run over ``C`` minus ``F`` is taken at once
(possessive: giving some back would end before a character not in ``F``).

It is applied only where that argument holds: no case-insensitive or local flags, not
inside lookarounds, atomic groups, possessive loops or conditionals (there a failure
after the group does not come back to try a later end), and only when ``F`` is known
from the pattern (literals, small literal classes, optional parts, alternatives, group
ends, ``$`` and ``\\Z``), and the loop is not followed directly by a literal (``re``'s
own fast path). It works on ``re``'s parse tree (``re._parser``/``re._compiler``), on
CPython 3.11, where the tests check it; any surprise from them, or another version, falls
back to ``re.compile``. Tests compare both on
random patterns and texts (tests/test_processors/test_regex_rewrite.py).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["compile_regex", "optional_groups", "rewrite_count"]

# CPython's own regex compiler, under these names since 3.11 (no type stubs: Any).
_sre: Any
_compiler: Any
_c: Any
_parser: Any
try:
    _sre, _compiler, _c, _parser = (importlib.import_module(m) for m in (
        "_sre", "re._compiler", "re._constants", "re._parser"))
except ImportError:  # pragma: no cover - another implementation: plain re
    _parser = None
# Only where the parse tree's shapes were checked by the tests (a later CPython may change
# them without an error): elsewhere every pattern is compiled by re as written.
if sys.version_info[:2] != (3, 11):  # pragma: no cover - the CI runs 3.11
    _parser = None

#: A follow set larger than this is not worth a class of its own.
_MAX_FOLLOW = 32
_RANGE_MAX = 64  # a literal range in a class, spelled out up to this many characters

Follow = frozenset[int] | None  # characters that can come next; None: unknown or any
Thunk = Callable[[], Follow]


def compile_regex(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``re.compile(pattern, flags)``, with the lazy loops it can prove rewritten.

    The result is an ordinary ``re.Pattern`` with the same ``pattern``, ``flags``,
    ``groups`` and ``groupindex``, and the same matches and groups on every text."""
    plain = re.compile(pattern, flags)
    if _parser is None or plain.flags & (re.IGNORECASE | re.LOCALE):
        return plain
    try:
        tree = _parser.parse(pattern, flags)
        if not _Rewriter(tree.state.flags).sequence(tree, _end):
            return plain
        _reset_widths(tree)
        code = _compiler._code(tree, flags)
        indexgroup: list[str | None] = [None] * tree.state.groups
        for name, i in tree.state.groupdict.items():
            indexgroup[i] = name
        fast: re.Pattern[str] = _sre.compile(pattern, flags | tree.state.flags, code,
                                              tree.state.groups - 1, tree.state.groupdict,
                                              tuple(indexgroup))
    except Exception:  # noqa: BLE001 - an internal we did not expect: the plain pattern
        return plain
    if fast.flags != plain.flags or fast.groups != plain.groups:
        return plain
    return fast


def rewrite_count(pattern: str, flags: int = 0) -> int:
    """How many lazy loops :func:`compile_regex` rewrites in ``pattern`` (for tests)."""
    if _parser is None:
        return 0
    tree = _parser.parse(pattern, flags)
    if tree.state.flags & (re.IGNORECASE | re.LOCALE):
        return 0
    rw = _Rewriter(tree.state.flags)
    rw.sequence(tree, _end)
    return rw.count


def optional_groups(regex: re.Pattern[str]) -> frozenset[int]:
    """The groups that may be left unset in a match of ``regex``: those inside an optional
    loop, an alternative, a lookaround or a conditional. Every other group takes part in
    every match, so a hot loop needs to test only these for ``None`` (all of them when
    the pattern cannot be read)."""
    every = frozenset(range(1, regex.groups + 1))
    if _parser is None:
        return every
    try:
        tree = _parser.parse(regex.pattern, regex.flags)
    except Exception:  # noqa: BLE001 - an internal we did not expect: assume any may be unset
        return every
    always: set[int] = set()

    def walk(sub: Any) -> None:
        for op, av in sub.data:
            if op is _c.SUBPATTERN:
                if av[0] is not None:
                    always.add(av[0])
                walk(av[3])
            elif op is _c.ATOMIC_GROUP:
                walk(av)
            elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT) and av[0] > 0:
                walk(av[2])
            # Optional loops, alternatives, lookarounds, conditionals: groups may be unset.

    walk(tree)
    return every - always


def _end() -> Follow:
    return None  # the end of the pattern: anything (or nothing) may follow


def _reset_widths(sub: Any) -> None:
    """Forget the (min, max) widths the parser cached: the tree changed under them."""
    sub.width = None
    for _, av in sub.data:
        for x in av if isinstance(av, (list, tuple)) else (av,):
            if isinstance(x, _parser.SubPattern):
                _reset_widths(x)
            elif isinstance(x, list):
                for y in x:
                    if isinstance(y, _parser.SubPattern):
                        _reset_widths(y)


class _Rewriter:
    def __init__(self, flags: int) -> None:
        self.dotall = bool(flags & re.DOTALL)
        self.count = 0

    # -- what can come next -----------------------------------------------------------

    def follow(self, items: list[Any], i: int, after: Thunk) -> Follow:
        """The characters ``items[i:]`` then ``after`` can start with (None: unknown)."""
        c = _c
        acc: set[int] = set()
        for j in range(i, len(items)):
            op, av = items[j]
            if op is c.LITERAL:
                acc.add(av)
                return _small(acc)
            if op is c.IN:
                chars = _literal_class(av)
                return None if chars is None else _small(acc | chars)
            if op is c.AT and av in (c.AT_END, c.AT_END_LINE, c.AT_END_STRING):
                # Holds only at the end or before a newline (\Z: only at the end). The end
                # needs no character: the rewritten loop always tries the end of its run.
                return _small(acc if av is c.AT_END_STRING else acc | {10})

            def rest(j: int = j) -> Follow:
                return self.follow(items, j + 1, after)

            if op is c.SUBPATTERN:
                group, add, dele, sub = av
                if add or dele:
                    return None
                inner = self.follow(sub.data, 0, rest)
                return None if inner is None else _small(acc | inner)
            if op is c.BRANCH:
                for alt in av[1]:
                    f = self.follow(alt.data, 0, rest)
                    if f is None:
                        return None
                    acc |= f
                return _small(acc)
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                lo, _hi, sub = av
                body = self.follow(sub.data, 0, _end)
                if body is None:
                    return None
                acc |= body
                if lo > 0:
                    return _small(acc)
                continue  # the loop may be skipped: what follows it counts too
            return None  # assertions, backreferences, classes of any size: unknown
        f = after()
        return None if f is None else _small(acc | f)

    # -- the walk ------------------------------------------------------------------------

    def sequence(self, sub: Any, after: Thunk) -> bool:
        """Rewrite what can be proven in ``sub`` (followed by ``after``); True if any."""
        c = _c
        changed = False
        items = sub.data
        j = 0
        while j < len(items):
            op, av = items[j]

            def rest(j: int = j) -> Follow:
                return self.follow(items, j + 1, after)

            if op is c.SUBPATTERN:
                if not (av[1] or av[2]):
                    changed |= self.sequence(av[3], rest)
            elif op is c.BRANCH:
                for alt in av[1]:
                    changed |= self.sequence(alt, rest)
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
                lo, hi, body = av
                new = self.lazy_loop(op, av, rest, items[j + 1] if j + 1 < len(items) else None)
                if new is not None:
                    items[j:j + 1] = new
                    self.count += 1
                    changed = True
                    j += len(new)
                    continue
                # After an iteration comes another one or what follows the loop.
                def again(body: Any = body, hi: int = hi, rest: Thunk = rest) -> Follow:
                    f = rest()
                    if hi <= 1 or f is None:
                        return f
                    b = self.follow(body.data, 0, _end)
                    return None if b is None else _small(f | b)

                changed |= self.sequence(body, again)
            # Lookarounds, atomic groups, possessive loops, conditionals: left as they are.
            j += 1
        return changed

    def lazy_loop(self, op: Any, av: Any, rest: Thunk, nxt: Any) -> list[Any] | None:
        """The replacement items for ``C*?``/``C+?`` (see the module doc), or None."""
        c = _c
        lo, hi, body = av
        if op is not c.MIN_REPEAT or lo > 1 or hi is not c.MAXREPEAT or len(body.data) != 1:
            return None
        if nxt is not None and nxt[0] is c.LITERAL:
            return None  # re checks the next literal itself before trying the rest
        item = body.data[0]
        follow = rest()
        if follow is None:
            return None
        outside = self.minus(item, follow)
        if outside is None:
            return None
        probe = _compiler.compile(_parser.SubPattern(body.state, [item]), body.state.flags)
        inside = [f for f in sorted(follow) if probe.fullmatch(chr(f))]
        state = body.state
        run = (c.POSSESSIVE_REPEAT, (0, c.MAXREPEAT, _parser.SubPattern(state, [outside])))
        new: list[Any] = [item] if lo == 1 else []
        new.append(run)
        if inside:
            step = [(c.IN, [(c.LITERAL, f) for f in inside]), run]
            new.append((c.MIN_REPEAT, (0, c.MAXREPEAT, _parser.SubPattern(state, step))))
        return new

    def minus(self, item: Any, follow: frozenset[int]) -> Any:
        """A class item for ``item``'s characters outside ``follow``, or None."""
        c = _c
        op, av = item
        extra = [(c.LITERAL, f) for f in sorted(follow)]
        if op is c.NOT_LITERAL:
            return (c.IN, [(c.NEGATE, None), (c.LITERAL, av), *extra])
        if op is c.ANY:
            newline = [] if self.dotall else [(c.LITERAL, 10)]
            return (c.IN, [(c.NEGATE, None), *newline, *extra])
        if op is c.IN and av and av[0][0] is c.NEGATE:
            return (c.IN, [*av, *extra])
        if op is c.IN:
            chars = _literal_class(av)
            if chars is None or not chars - follow:
                return None
            return (c.IN, [(c.LITERAL, ch) for ch in sorted(chars - follow)])
        return None


def _small(chars: set[int] | frozenset[int]) -> Follow:
    return frozenset(chars) if len(chars) <= _MAX_FOLLOW else None


def _literal_class(items: list[Any]) -> set[int] | None:
    """The characters of a positive class of literals and short ranges, else None."""
    c = _c
    chars: set[int] = set()
    for op, av in items:
        if op is c.LITERAL:
            chars.add(av)
        elif op is c.RANGE and av[1] - av[0] < _RANGE_MAX:
            chars.update(range(av[0], av[1] + 1))
        else:
            return None
    return chars

"""Parsers compiled into Python functions, once per parser, for the per-line hot path.

As dataclasses and attrs do, the source of a function specialised for one configuration is
written and ``exec``-ed once at build time. The regex parser's function unpacks
``m.groups()`` into locals, converts ``types`` inline (``int(g)`` in a ``try``), parses
the time key with a one-entry memo and builds the result as one dict literal; a line with
an optional group left out, a time that does not fit or a typed time key takes the general
route (:attr:`RegexSpec.finish`, the same functions the other parsers use), so results are
those of the general path, key order included.

There is one regex parse here, in three forms: :func:`compile_plain` (the plugin's
``parse``: fields or ``None``), :func:`compile_parse` (a bound parser's ``parse``: types and
time applied, :class:`ParseFailure` on no match) and :func:`compile_records` (a whole
batch of lines into the parser filter's output records, see ``Shape``); the same writer
emits the match-to-fields part of all three. The watchdog guard is
:class:`~processors.safe_regex.SafePattern`'s: ``search`` for one line, ``each`` over a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..regex_rewrite import optional_groups
from ..safe_regex import RegexTimeout, SafePattern
from ..timefmt import TimeFormatError

__all__ = ["JsonSpec", "ParseFailure", "RecordsFn", "RegexSpec", "Shape", "compile_parse",
           "compile_plain", "compile_records"]

Fields = dict[str, Any]
#: ``fn(texts, times, offsets, id_prefix, tag, meta, streams, out) -> failures``: appends to
#: ``out`` one record per line, or the :class:`ParseFailure` of a line no parser matched.
RecordsFn = Callable[[list[str], list[float], list[int], str, str, dict[str, Any],
                      list[str] | None, list[Any]], int]


class ParseFailure(Exception):
    """The text did not match (or its regex ran past its budget); carries the reason.

    ``timeout`` is true when the parser's regex ran past its CPU budget on this text.
    """

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.timeout = timeout


@dataclass(frozen=True)
class Shape:
    """The records a batch function builds: the parser filter's options and the batch's."""

    reserve: bool  # reserve_data: the record's other fields (metadata) stay
    preserve: bool  # preserve_key: the line stays under ``log``
    streams: bool  # the batch has a stream per line (CRI, docker files)
    restore: bool  # parsed fields may carry ``_id``/``_tag``: the record's win
    #: The batch's metadata keys, in order: the record is one dict literal with constant
    #: keys (built presized, ~0.5 µs a line less than merging ``**meta``).
    meta: tuple[str, ...] = ()


@dataclass
class RegexSpec:
    """One configured regex parser: its pattern, ``types`` and time handling."""

    pattern: SafePattern
    name: str
    types: dict[str, str] = field(default_factory=dict)
    converters: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    time_key: str | None = None
    time_keep: bool = False
    #: ``time_format``'s parser (raises ``TimeFormatError``), or None.
    time_parse: Callable[[str], float] | None = None
    #: Whole-second formats: one compare saves the parse of a repeated timestamp.
    time_memo: bool = False
    #: The general route: ``types`` then time on a fields dict -> (fields, time).
    finish: Callable[[Fields], tuple[Fields, float | None]] | None = None
    #: The time alone (types already applied) -> (fields, time).
    finish_time: Callable[[Fields], tuple[Fields, float | None]] | None = None
    #: A time that does not fit: flags and counts it -> (fields, None).
    bad_time: Callable[[Fields], tuple[Fields, None]] | None = None


@dataclass
class JsonSpec:
    """One configured ``json`` parser: what its lines need besides ``orjson.loads``."""

    name: str
    #: ``types``: (key, converter) pairs, applied by ``convert`` (the general path's).
    convs: list[tuple[str, Callable[[Any], Any]]]
    convert: Callable[[Fields, list[tuple[str, Callable[[Any], Any]]]], None]
    time_key: str | None
    time_keep: bool
    time_parse: Callable[[str], float] | None
    finish_time: Callable[[Fields], tuple[Fields, float | None]]
    bad_time: Callable[[Fields], tuple[Fields, None]]


class _Writer:
    """Source lines at an indentation."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, *lines: str) -> None:
        self.lines.extend("    " * self.depth + ln for ln in lines)

    def source(self) -> str:
        return "\n".join(self.lines) + "\n"


def _lit(items: list[tuple[str, str]]) -> str:
    return ", ".join(f"{k!r}: {v}" for k, v in items)


class _Regex:
    """The match-to-fields part of a compiled regex parser, written into a function."""

    def __init__(self, spec: RegexSpec, plain: bool) -> None:
        self.spec = spec
        rx = spec.pattern.regex
        self.ngroups = rx.groups
        self.named = sorted(rx.groupindex.items(), key=lambda kv: kv[1])
        self.optional = optional_groups(rx)
        names = dict(self.named)
        tk = None if plain else spec.time_key
        self.types = {} if plain else {k: t for k, t in spec.types.items()
                                       if k in names and t != "string"}
        # The time is read inline when it is a group, has a format and no type of its own;
        # a time key that is no group gives no time (as the general path does).
        self.tk = tk if tk in names else None
        self.inline_time = (self.tk is not None and spec.time_parse is not None
                            and self.tk not in self.types)
        self.ns: dict[str, Any] = {"RegexTimeout": RegexTimeout,
                                   "TimeFormatError": TimeFormatError,
                                   "ParseFailure": ParseFailure,
                                   "tparse": spec.time_parse, "finish": spec.finish,
                                   "finish_time": spec.finish_time, "bad_time": spec.bad_time,
                                   "nomatch": ParseFailure(f"parser {spec.name!r} did not match"),
                                   "timeout_prefix": f"parser {spec.name!r}: "}

    def var(self, name: str) -> str:
        return f"g{dict(self.named)[name]}"

    def fields(self, omit: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return [(k, f"g{i}") for k, i in self.named if k not in omit]

    def kept(self) -> tuple[str, ...]:
        """Groups left out of the fields after a good inline time: the key, unless kept."""
        return (self.tk,) if self.inline_time and not self.spec.time_keep and self.tk else ()

    def unpack(self, w: _Writer, on_unset: Callable[[], None]) -> None:
        """The groups into locals ``g1``...; ``on_unset`` writes what to do when a group
        that can be left out did not take part (only those are tested: ``None in
        m.groups()`` compared every group, ~0.2 µs a line)."""
        if self.ngroups:
            w(", ".join(f"g{i}" for i in range(1, self.ngroups + 1)) + ", = m.groups()")
        if self.optional:
            w("if " + " or ".join(f"g{i} is None" for i in sorted(self.optional)) + ":")
            w.depth += 1
            on_unset()
            w.depth -= 1

    def convert(self, w: _Writer) -> None:
        for k, t in self.types.items():
            g = self.var(k)
            if t in ("integer", "float"):
                w("try:", f"    {g} = {'int' if t == 'integer' else 'float'}({g})",
                  "except ValueError:", "    pass")
            else:
                conv = f"conv_{g}"
                self.ns[conv] = self.spec.converters[t]
                w("try:", f"    {g} = {conv}({g})", "except (ValueError, TypeError):", "    pass")

    def read_time(self, w: _Writer, on_bad: Callable[[], None]) -> None:
        """``t`` = the parsed time of the time group (memo first); ``on_bad`` otherwise."""
        g = self.var(self.tk)  # type: ignore[arg-type]
        w(f"if {g} == last_raw:", "    t = last_t", "else:")
        w.depth += 1
        w("try:", f"    t = tparse({g})", "except TimeFormatError:")
        w.depth += 1
        w(f"fields = {{{_lit(self.fields())}}}")
        on_bad()
        w.depth -= 1
        if self.spec.time_memo:
            w(f"last_raw = {g}", "last_t = t")
        w.depth -= 1


def _compile(src: str, ns: dict[str, Any], name: str) -> Any:
    scope: dict[str, Any] = {}
    exec(compile(src, f"<compiled parser {name!r}>", "exec"), ns, scope)  # noqa: S102
    return scope["make"]()


def compile_plain(pattern: SafePattern, name: str) -> Callable[[str], Fields | None]:
    """``parse(text)``: the named groups that took part, or ``None`` (no types, no time).

    Raises ``RegexTimeout`` from the guarded search when armed and over the budget."""
    rx = _Regex(RegexSpec(pattern, name), plain=True)
    rx.ns["search"] = pattern.search
    w = _Writer()
    w("def make():", "    def parse(text):")
    w.depth = 2
    w("m = search(text)", "if m is None:", "    return None")
    rx.unpack(w, lambda: w("return {k: v for k, v in m.groupdict().items() if v is not None}"))
    w(f"return {{{_lit(rx.fields())}}}")
    w.depth = 1
    w("return parse")
    return _compile(w.source(), rx.ns, name)  # type: ignore[no-any-return]


def compile_parse(spec: RegexSpec) -> Callable[[str], tuple[Fields, float | None]]:
    """``parse(text) -> (fields, time or None)`` with ``types`` and the time applied.

    Raises :class:`ParseFailure` (no match, or the regex ran past its budget)."""
    rx = _Regex(spec, plain=False)
    rx.ns["search"] = spec.pattern.search  # the guarded call
    w = _Writer()
    w("def make():", "    last_raw = None", "    last_t = 0.0", "    def parse(text):")
    w.depth = 2
    w("nonlocal last_raw, last_t", "try:", "    m = search(text)",
      "except RegexTimeout as exc:",
      "    raise ParseFailure(f'{timeout_prefix}{exc}; line left unparsed', timeout=True) "
      "from None",
      "if m is None:", "    raise ParseFailure(str(nomatch))")
    rx.unpack(w, lambda: w(
        "return finish({k: v for k, v in m.groupdict().items() if v is not None})"))
    rx.convert(w)
    if rx.inline_time:
        rx.read_time(w, lambda: w("return bad_time(fields)"))
        w(f"return {{{_lit(rx.fields(rx.kept()))}}}, t")
    elif rx.tk is not None:
        w(f"return finish_time({{{_lit(rx.fields())}}})")
    else:
        w(f"return {{{_lit(rx.fields())}}}, None")
    w.depth = 1
    w("return parse")
    return _compile(w.source(), rx.ns, spec.name)  # type: ignore[no-any-return]


def _head(shape: Shape, time: str) -> list[tuple[str, str]]:
    """The record's own keys, in the order the general path leaves them."""
    rid = 'f"{pre}{off:x}"'
    if shape.reserve:
        head = [("log", "text")] if shape.preserve else []
        head += [("time", time), ("_id", rid), ("_tag", "tag")]
        return head
    head = [("_id", rid), ("_tag", "tag"), ("time", time)]
    return head + ([("log", "text")] if shape.preserve else [])


def _record(shape: Shape, time: str, fields: str) -> str:
    """A dict literal: head, metadata (reserve_data), stream, then ``fields`` (``**x``)."""
    head = _head(shape, time)
    if not shape.reserve:
        return f"{{{_lit(head)}, {fields}}}"
    lit = f"{{{_lit(head)}, **tmpl, "
    if shape.streams:
        lit += "'stream': st, "
    return lit + fields + "}"


def _fast_record(shape: Shape, time: str, fields: list[tuple[str, str]]) -> str:
    """The same record with constant keys: a field named like a metadata key (or
    ``stream``) takes its place, as ``dict.update`` leaves it."""
    items = _head(shape, time)
    rest = dict(fields)
    if shape.reserve:
        own = [(k, f"meta{i}") for i, k in enumerate(shape.meta)]
        if shape.streams:
            own.append(("stream", "st"))
        items += [(k, rest.pop(k, v)) for k, v in own]
    return f"{{{_lit(items + list(rest.items()))}}}"


def _assemble(w: _Writer, shape: Shape) -> None:
    """Append the record of ``fields`` and ``t`` as the general path builds it."""
    w(f"rec = {_record(shape, 'tr', '**fields')}", "if t is not None:", "    rec['time'] = t")
    if shape.restore:
        w("rec['_id'] = f\"{pre}{off:x}\"", "rec['_tag'] = tag")
    w("append(rec)")


def _json_fields(w: _Writer, spec: JsonSpec, ns: dict[str, Any]) -> None:
    """``fields, t`` of a json line, inline: ``orjson.loads``, ``types``, then the common
    time (a string in ``time_format``); every other time goes through ``finish_time``, as
    the bound parser's ``parse`` does (three Python calls a line fewer)."""
    ns.update(loads=orjson.loads, JSONDecodeError=orjson.JSONDecodeError,
              nomatch_text=f"parser {spec.name!r} did not match", convert=spec.convert,
              convs=spec.convs, tparse=spec.time_parse, finish_time=spec.finish_time,
              bad_time=spec.bad_time, TimeFormatError=TimeFormatError, tk=spec.time_key)
    w("try:", "    fields = loads(text)", "except JSONDecodeError:",
      "    fields = None", "if type(fields) is not dict:",
      "    append(ParseFailure(nomatch_text))", "    fails += 1", "    continue")
    if spec.convs:
        w("convert(fields, convs)")
    if spec.time_key is None:
        w("t = None")
        return
    if spec.time_parse is None:
        w("fields, t = finish_time(fields)")
        return
    w("raw = fields.get(tk)", "if type(raw) is str:")
    w.depth += 1
    w("try:", "    t = tparse(raw)", "except TimeFormatError:",
      "    fields, t = bad_time(fields)")
    if not spec.time_keep:
        w("else:", "    del fields[tk]")
    w.depth -= 1
    w("else:", "    fields, t = finish_time(fields)")


def compile_records(shape: Shape, *, regex: RegexSpec | None = None,
                    json: JsonSpec | None = None,
                    parse: Callable[[str], tuple[Fields, float | None]] | None = None,
                    name: str = "") -> RecordsFn:
    """A function that turns a batch's lines into the parser filter's output records.

    With ``regex``, the compiled regex parser runs inline under the watchdog guard
    (``SafePattern.each``); with ``json``, the json parser runs inline; otherwise
    ``parse`` (any bound parser, or several tried in order) is called per line. Either way
    each line's record is the one the general path (a ``{"log": ...}`` record, then the
    filter) gives, with the same key order."""
    w = _Writer()
    ns: dict[str, Any]
    if regex is not None:
        rx = _Regex(regex, plain=False)
        ns = rx.ns
        ns["search"], ns["each"] = regex.pattern.regex.search, regex.pattern.each
        name = regex.name
    elif json is not None:
        ns = {"ParseFailure": ParseFailure}
        name = json.name
    else:
        ns = {"parse": parse, "ParseFailure": ParseFailure}
    args = "texts, times, offsets, pre, tag, tmpl, streams, out"
    w("def make():", "    last_raw = None", "    last_t = 0.0", f"    def run({args}):")
    w.depth = 2
    w("nonlocal last_raw, last_t", "append = out.append", "fails = 0")
    if shape.reserve:
        for i, k in enumerate(shape.meta):
            w(f"meta{i} = tmpl[{k!r}]")
    src = "each(texts)" if regex is not None else "texts"
    loop = "text, tr, off" + (", st" if shape.streams else "")
    zipped = f"{src}, times, offsets" + (", streams" if shape.streams else "")
    w(f"for {loop} in zip({zipped}):")
    w.depth += 1
    if json is not None:
        _json_fields(w, json, ns)
        _assemble(w, shape)
    elif regex is None:
        w("try:", "    fields, t = parse(text)", "except ParseFailure as exc:",
          "    append(exc)", "    fails += 1", "    continue")
        _assemble(w, shape)
    else:
        w("try:", "    m = search(text)", "except RegexTimeout as exc:",
          "    append(ParseFailure(f'{timeout_prefix}{exc}; line left unparsed', timeout=True))",
          "    fails += 1", "    continue",
          "if m is None:", "    append(nomatch)", "    fails += 1", "    continue")

        def unset() -> None:
            w("fields, t = finish({k: v for k, v in m.groupdict().items() if v is not None})")
            _assemble(w, shape)
            w("continue")

        rx.unpack(w, unset)
        rx.convert(w)
        if rx.inline_time:
            def on_bad() -> None:
                w("fields, t = bad_time(fields)")
                _assemble(w, shape)
                w("continue")

            rx.read_time(w, on_bad)
            # The head holds the parsed time; a group named `time` would only be replaced.
            omit = rx.kept() + ("time",) + (("_id", "_tag") if shape.restore else ())
            w(f"append({_fast_record(shape, 't', rx.fields(omit))})")
        elif rx.tk is not None:
            w(f"fields, t = finish_time({{{_lit(rx.fields())}}})")
            _assemble(w, shape)
        else:
            omit = ("_id", "_tag") if shape.restore else ()
            w(f"append({_fast_record(shape, 'tr', rx.fields(omit))})")
    w.depth = 2
    w("return fails")
    w.depth = 1
    w("return run")
    return _compile(w.source(), ns, name)  # type: ignore[no-any-return]

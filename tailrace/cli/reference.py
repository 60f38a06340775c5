"""``tailrace config reference`` and ``tailrace config schema``: docs from the option tables.

Every plugin declares its options once, as a pydantic model (``Options``). This module
turns those declarations, plus the ``service:`` section, into the two artefacts an operator
reads or an editor uses:

- :func:`reference_markdown`: the configuration reference (``docs/configuration.md`` is
  its output, and a test keeps the two equal, so the docs cannot drift from the code);
- :func:`~tailrace.cli.configschema.config_schema` (its own module): one JSON Schema
  (draft 2020-12) for a whole config file, each ``pipeline.*`` entry checked against the
  options of the plugin its ``name`` selects.

Both are pure functions of a :class:`~tailrace.plugins.Registry`: the same registry gives
byte-for-byte the same output. This module holds the Markdown and the two commands.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import annotated_types
import click
from pydantic import BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..options import parse_byte_size
from ..plugins import Registry
from ..serviceconfig import ServiceConfig
from .configschema import (
    SECTIONS,
    accepted_keys,
    config_schema,
    first_line,
    options_model,
)
from .registry import build_registry

__all__ = ["reference", "reference_markdown", "schema"]

# ------------------------------------------------------------------------------------------
# Markdown reference


def _is_size(metadata: Iterable[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is parse_byte_size for m in metadata)


_SCALARS: dict[Any, str] = {
    str: "string", int: "integer", float: "number", bool: "boolean", Any: "any",
    SecretStr: "string (secret)",
}


def _type_text(annotation: Any, metadata: Iterable[Any] = ()) -> str:
    """How a field's type reads in the reference: ``list of string``, ``size``, ..."""
    meta = list(metadata)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        return _type_text(inner, [*meta, *extra])
    if _is_size(meta):
        return "size"
    if origin in (typing.Union, types.UnionType):
        parts = [_type_text(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin is tuple and Ellipsis not in typing.get_args(annotation):
        return "(" + ", ".join(_type_text(a) for a in typing.get_args(annotation)) + ")"
    if origin in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return "list of " + (_type_text(args[0]) if args else "any")
    if origin is dict:
        key, value = typing.get_args(annotation) or (str, Any)
        return f"map of {_type_text(key)} to {_type_text(value)}"
    model = options_model(annotation)
    if model is not None:
        return "mapping"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    return getattr(annotation, "__name__", str(annotation))


def _constraints(metadata: Iterable[Any]) -> list[str]:
    """``≥ 1``, ``< 60``, ``matching `^...$` ``: the tightest bounds and other checks."""
    lower: list[tuple[float, bool]] = []  # (bound, inclusive)
    upper: list[tuple[float, bool]] = []
    notes: list[str] = []
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            lower.append((_bound(m.ge), True))
        elif isinstance(m, annotated_types.Gt):
            lower.append((_bound(m.gt), False))
        elif isinstance(m, annotated_types.Le):
            upper.append((_bound(m.le), True))
        elif isinstance(m, annotated_types.Lt):
            upper.append((_bound(m.lt), False))
        elif isinstance(m, annotated_types.MinLen):
            notes.append(f"at least {m.min_length} long")
        elif isinstance(m, annotated_types.MaxLen):
            notes.append(f"at most {m.max_length} long")
        elif getattr(m, "pattern", None):
            notes.append(f"matching `{m.pattern}`")
    bounds = []
    if lower:  # the highest bound; at a tie the exclusive one is tighter
        value, inclusive = max(lower, key=lambda b: (b[0], not b[1]))
        bounds.append(f"{'≥' if inclusive else '>'} {_number(value)}")
    if upper:
        value, inclusive = min(upper, key=lambda b: (b[0], b[1]))
        bounds.append(f"{'≤' if inclusive else '<'} {_number(value)}")
    return bounds + notes


def _shown_keys(model: type[BaseModel], name: str, field: FieldInfo) -> list[str]:
    """The keys the reference shows: not a Python-only spelling like ``copy_``."""
    keys = accepted_keys(model, name, field)
    return [k for k in keys if not k.endswith("_")] or keys


def _bound(value: Any) -> float:
    return float(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _size_text(n: int) -> str:
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n and n % 1024**power == 0:
            return f"{n // 1024**power}{unit}"
    return str(n)


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return ""
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and _is_size(field.metadata) and value:
        return f"`{value}` ({_size_text(value)})"
    if isinstance(value, str):
        return f"`{value}`" if value else "`''`"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _option_tables(model: type[BaseModel], prefix: str, level: int,
                   selector: tuple[str, str] | None = None) -> list[str]:
    """One table for ``model``, then a sub-section for each nested options model.

    ``selector`` is the (key, value) that picks this plugin (``name: tail``): its row says so
    instead of repeating the base class's generic help.
    """
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel], FieldInfo]] = []
    for key, field in model.model_fields.items():
        shown = ", ".join(f"`{k}`" for k in _shown_keys(model, key, field))
        if selector is not None and key == selector[0]:
            rows.append(f"| {shown} | `{selector[1]}` | **required** | Selects this plugin. |")
            continue
        type_text = _type_text(field.annotation, field.metadata)
        limits = _constraints(field.metadata)
        if limits:
            type_text += ", " + ", ".join(limits)
        sub = options_model(field.annotation)
        description = field.description or ""
        if sub is not None:
            nested.append((key, sub, field))
            anchor = _anchor(f"{prefix}.{key}")
            description = (description + f" See [{prefix}.{key}](#{anchor}).").strip()
        rows.append(f"| {shown} | {_cell(type_text)} | {_cell(_default_text(field))} | "
                    f"{_cell(description)} |")
    out = ["\n".join(rows), ""]
    for key, sub, field in nested:
        out += [f"{'#' * level} `{prefix}.{key}`", ""]
        doc = (field.description or first_line(sub.__doc__)).strip()
        if doc:
            out += [doc, ""]
        out += _option_tables(sub, f"{prefix}.{key}", level)
    return out


def _anchor(heading: str) -> str:
    """GitHub's heading anchor for a heading that is one code span."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def _stock_parsers() -> list[dict[str, Any]]:
    from processors.stock import STOCK_PARSERS

    return list(STOCK_PARSERS)


_INTRO = """\
# Configuration reference

<!-- Generated by `tailrace config reference --builtin-only` from the plugins' option
     tables; do not edit by hand. tests/test_tailrace/test_reference.py fails when this
     file and the code disagree. -->

A tailrace config is one YAML file with Fluent Bit's shape:

```yaml
service: {...}            # the broker, state, partitions, health/metrics endpoint
pipeline:
  inputs:  [{name: tail, ...}]      # what the edge agent reads
  filters: [{name: parser, ...}]    # what processors do to each record, in order
  outputs: [{name: es, ...}]        # where sinks deliver
parsers:   [{name: nginx, format: regex, ...}]   # named parsers the filters refer to
```

How values are read:

- Every key below is checked: an unknown key, a wrong type or a value out of range is an
  error naming `FILE:LINE:COL` and the key, and `tailrace config check -c FILE` lists
  every problem at once (exit code 2), in file order. An entry with a bad key still gets
  its checks across keys (`api_key` together with `http_user`), run without the bad keys
  (a check about a bad key itself waits until it is fixed); what the processors compile
  at start (a parser's `time_format`, `time_offset`) is compiled by the check too.
- `${VAR}` and `${VAR:-default}` in any string value expand from the environment before
  the file is checked, so secrets and per-node values stay out of the file.
- A **size** is a number of bytes or a string with a unit: `65536`, `'64KiB'`, `'1MiB'`,
  `'10MB'` (KB/MB = 1000, KiB/MiB = 1024; a bare `k`/`m`/`g` is binary, as in Fluent Bit).
- Durations and intervals carry their unit in the key name: `_ms` milliseconds, `_s`
  seconds.
- Relative paths are relative to the config file's folder.
- `tailrace config schema` prints a JSON Schema of the whole file for editors (for the
  YAML language server: `# yaml-language-server: $schema=tailrace.schema.json`).
"""


def reference_markdown(registry: Registry) -> str:
    """The configuration reference as Markdown: every option of every plugin in ``registry``.

    Args:
        registry: the plugins to document (``build_registry(entry_points=False)`` for the
            built-in ones that ``docs/configuration.md`` holds).

    Returns:
        The document, ending with a newline; deterministic for a given registry.
    """
    out = [_INTRO]
    toc = ["## Contents", "", "- [service](#service)"]
    for _section, attr, _key, title in SECTIONS:
        names = ", ".join(f"[{n}](#{_anchor(f'{n} {attr[:-1]}')})" for n in getattr(registry, attr))
        toc.append(f"- [{title}](#{title.lower()}): {names}")
    toc.append("- [Stock parsers](#stock-parsers)")
    out += ["\n".join(toc), ""]

    out += ["## service", "",
            "Settings of every process that reads this file: the broker, local state, "
            "partitioning, the HTTP endpoint, timing of leases and heartbeats.", "",
            "```yaml\nservice:\n  broker: redis://redis:6379/0\n  partitions: 8\n```", ""]
    out += _option_tables(ServiceConfig, "service", 3)

    for section, attr, key, title in SECTIONS:
        out += [f"## {title}", ""]
        if attr == "parsers":
            out += ["Entries of the top-level `parsers:` list; `format` selects the parser "
                    "plugin and `name` is what filters refer to.", ""]
        else:
            out += [f"Entries of `{section}`; `{key}` selects the plugin.", ""]
        for name, cls in registry.table(attr).items():
            out += [f"### {name} {attr[:-1]}", ""]
            where = f"`{cls.__module__}.{cls.__name__}`"
            out += [f"{_cell(str(cls.description))} ({where})", ""]
            out += [f"```yaml\n{section.split('.')[-1]}:\n  - {key}: {name}\n```", ""]
            out += _option_tables(cls.Options, name, 4, selector=(key, name))

    out += ["## Stock parsers", "",
            "Parsers that need no `parsers:` entry (Fluent Bit's, with their regular "
            "expressions as written); a `parsers:` entry of the same name replaces one.", "",
            "| Name | Format | Time key | Time format |", "|---|---|---|---|"]
    for p in _stock_parsers():
        time_key = f"`{p['time_key']}`" if p.get("time_key") else ""
        time_format = f"`{p['time_format']}`" if p.get("time_format") else ""
        out.append(f"| `{p['name']}` | {p['format']} | {time_key} | {_cell(time_format)} |")
    out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# Commands


def _registry(builtin_only: bool) -> Registry:
    return build_registry(entry_points=not builtin_only)


def _emit(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--builtin-only", is_flag=True,
                     help="Leave out plugins installed through entry points "
                     "(what docs/ holds).")(f)
    f = click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
                     help="Write to this file instead of standard output.")(f)
    return f


@click.command("reference")
@_common
def reference(builtin_only: bool, output: str | None) -> None:
    """Print the configuration reference (Markdown): every option of every plugin."""
    _emit(reference_markdown(_registry(builtin_only)), output)


@click.command("schema")
@_common
def schema(builtin_only: bool, output: str | None) -> None:
    """Print the JSON Schema of a config file (for editors and CI checks)."""
    text = json.dumps(config_schema(_registry(builtin_only)), indent=2, ensure_ascii=False)
    _emit(text + "\n", output)

"""``tailrace config reference`` and ``tailrace config schema``: docs from the option tables.

Every plugin declares its options once, as a pydantic model (``Options``). This module
turns those declarations, plus the ``service:`` section, into the two artefacts an operator
reads or an editor uses:

- :func:`reference_markdown`: the configuration reference (``docs/configuration.md`` is
  its output, and a test keeps the two equal, so the docs cannot drift from the code);
- :func:`config_schema`: one JSON Schema (draft 2020-12) for a whole config file, each
  ``pipeline.*`` entry checked against the options of the plugin its ``name`` selects.

Both are pure functions of a :class:`~tailrace.plugins.Registry`: the same registry gives
byte-for-byte the same output.
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
from pydantic import AliasChoices, BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import PydanticUndefined, core_schema

from ..options import parse_byte_size
from ..plugins import Kind, Registry
from ..serviceconfig import ServiceConfig
from .registry import build_registry

__all__ = [
    "ENV_REFERENCE",
    "SIZE_PATTERN",
    "accepted_keys",
    "config_schema",
    "reference",
    "reference_markdown",
    "schema",
]

#: JSON Schema spelling of what :func:`tailrace.options.parse_byte_size` accepts
#: (``65536``, ``"64KiB"``, ``"10MB"``, ``"1g"``); JSON Schema patterns have no flags.
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*[kKmMgGtT]?[iI]?[bB]?\s*$"

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: A string holding a ``${VAR}`` / ``${VAR:-default}`` reference (expanded before checking).
ENV_REFERENCE: dict[str, Any] = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
}

#: (config section, registry attribute, key that selects the plugin, heading)
_SECTIONS: tuple[tuple[str, Kind, str, str], ...] = (
    ("pipeline.inputs", "inputs", "name", "Inputs"),
    ("pipeline.filters", "filters", "name", "Filters"),
    ("pipeline.outputs", "outputs", "name", "Outputs"),
    ("parsers", "parsers", "format", "Parsers"),
)


# ------------------------------------------------------------------------------------------
# JSON Schema


class _SchemaGenerator(GenerateJsonSchema):
    """pydantic's generator, for the file as written and never stricter than the loader.

    - ``${VAR}`` references are expanded before validation, so wherever a value is
      constrained (a number, a boolean, a choice, a pattern) a string holding a reference
      is accepted too.
    - A validator that runs before (or around) type checking may accept input shapes the
      field's type does not show (a comma-separated string for a list, a mapping for a list
      of pairs). Unless it declares them (``json_schema_input_type``), the schema leaves such
      a value unconstrained: the loader is the authority.
    - Byte sizes are known: a number or a string with a unit.
    """

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        cls = schema["cls"]
        if not _reshapes_input(schema["schema"]):
            return super().model_schema(schema)
        # A model-level validator reshapes the mapping first (e.g. Fluent Bit's spellings):
        # name the keys for editors, constrain nothing.
        props: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            for key in accepted_keys(cls, name, field):
                props[key] = {"description": field.description} if field.description else {}
        result: dict[str, Any] = {"type": "object", "title": cls.__name__, "properties": props}
        if _first_line(cls.__doc__):
            result["description"] = _first_line(cls.__doc__)
        return result

    def _or_env(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        return {"anyOf": [schema, ENV_REFERENCE]}

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return self._or_env(super().int_schema(schema))

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return self._or_env(super().float_schema(schema))

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return self._or_env(super().bool_schema(schema))

    def literal_schema(self, schema: core_schema.LiteralSchema) -> JsonSchemaValue:
        return self._or_env(super().literal_schema(schema))

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        result = super().str_schema(schema)
        return self._or_env(result) if set(result) - {"type"} else result

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        if schema["function"].get("function") is parse_byte_size:
            number = self.generate_inner(schema["schema"])
            return {"anyOf": [number, {"type": "string", "pattern": SIZE_PATTERN}]}
        if _reshapes_input(schema):
            return {}
        return super().function_before_schema(schema)

    def function_wrap_schema(
        self, schema: core_schema.WrapValidatorFunctionSchema
    ) -> JsonSchemaValue:
        return {} if _reshapes_input(schema) else super().function_wrap_schema(schema)

    def function_plain_schema(
        self, schema: core_schema.PlainValidatorFunctionSchema
    ) -> JsonSchemaValue:
        return {} if _reshapes_input(schema) else super().function_plain_schema(schema)


def _reshapes_input(schema: Any) -> bool:
    """A validator that sees the raw input and declares no input type of its own."""
    return (
        schema.get("type") in ("function-before", "function-wrap", "function-plain")
        and "json_schema_input_schema" not in schema
        and schema["function"].get("function") is not parse_byte_size
    )


def _plugin_models(registry: Registry) -> list[type[BaseModel]]:
    """``ServiceConfig``, every plugin's ``Options`` and the option models nested in them."""
    models: list[type[BaseModel]] = []

    def add(model: type[BaseModel]) -> None:
        if model in models:
            return
        models.append(model)
        for field in model.model_fields.values():
            sub = _model_type(field.annotation)
            if sub is not None:
                add(sub)

    add(ServiceConfig)
    for _section, attr, _key, _title in _SECTIONS:
        for cls in registry.table(attr).values():
            add(cls.Options)
    return models


def _accept_every_key(model: type[BaseModel], definition: dict[str, Any]) -> None:
    """Let the schema accept each key the loader accepts (aliases and Python names)."""
    props: dict[str, Any] = definition.get("properties", {})
    required: list[str] = definition.get("required", [])
    for name, field in model.model_fields.items():
        keys = accepted_keys(model, name, field)
        present = [k for k in keys if k in props]
        if not present or len(keys) == 1:
            continue
        for k in keys:
            props.setdefault(k, props[present[0]])
        if present[0] in required:
            required.remove(present[0])
            definition.setdefault("allOf", []).append(
                {"anyOf": [{"required": [k]} for k in keys]})
    if "required" in definition and not required:
        del definition["required"]


def _drop_pydantic_keywords(node: Any) -> None:
    """Remove ``ge``/``gt``/``le``/``lt`` that pydantic leaves where it could not map a bound.

    They are no JSON Schema keywords (the bound is already in the schema it wraps).
    """
    if isinstance(node, dict):
        for key in ("ge", "gt", "le", "lt"):
            if isinstance(node.get(key), (int, float)):
                del node[key]
        for value in node.values():
            _drop_pydantic_keywords(value)
    elif isinstance(node, list):
        for value in node:
            _drop_pydantic_keywords(value)


def config_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a whole config file for the plugins in ``registry``.

    It describes the file as written: a ``${VAR}`` reference is accepted wherever a value
    is, and it never rejects a file the loader accepts (it may accept more: the loader has
    the last word, with ``tailrace config check``).

    Args:
        registry: the plugins whose options the schema covers.

    Returns:
        A JSON-serialisable dict (draft 2020-12); ``pipeline.*`` and ``parsers`` entries are
        matched to their plugin by ``name`` (``format`` for parsers) with ``if``/``then``.
    """
    models = _plugin_models(registry)
    refs, defs = models_json_schema(
        [(m, "validation") for m in models],
        ref_template="#/$defs/{model}",
        schema_generator=_SchemaGenerator,
    )

    all_defs: dict[str, Any] = defs.get("$defs", {})
    _drop_pydantic_keywords(all_defs)
    for model in models:
        _accept_every_key(model, all_defs[refs[(model, "validation")]["$ref"].split("/")[-1]])

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return dict(refs[(model, "validation")])

    def entries(attr: Kind, key: str) -> dict[str, Any]:
        table = registry.table(attr)
        names = list(table)
        item: dict[str, Any] = {
            "type": "object",
            "required": [key],
            "properties": {key: {"enum": names, "description": f"The plugin: {', '.join(names)}."}},
        }
        item["allOf"] = [
            {"if": {"properties": {key: {"const": n}}}, "then": ref(table[n].Options)}
            for n in names
        ]
        return {"type": ["array", "null"], "items": item}

    pipeline: dict[str, Any] = {
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": {
            attr: entries(attr, key)
            for section, attr, key, _title in _SECTIONS if section.startswith("pipeline.")
        },
    }
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "tailrace pipeline configuration",
        "description": "A tailrace config file (YAML) as written; `tailrace config check` "
        "has the last word. Generated by `tailrace config schema` from the option tables.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "service": {"type": ["object", "null"],
                        "if": {"type": "object"}, "then": ref(ServiceConfig)},
            "pipeline": pipeline,
            "parsers": entries("parsers", "format"),
        },
        "$defs": all_defs,
    }


# ------------------------------------------------------------------------------------------
# Markdown reference


def _is_size(metadata: Iterable[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is parse_byte_size for m in metadata)


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The options model a field holds (directly or as ``Model | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [_model_type(a) for a in typing.get_args(annotation)]
        models = [m for m in found if m is not None]
        return models[0] if len(models) == 1 else None
    return None


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
    model = _model_type(annotation)
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


def accepted_keys(model: type[BaseModel], name: str, field: FieldInfo) -> list[str]:
    """Every YAML key that sets field ``name`` of ``model`` (aliases first).

    Args:
        model: the options model.
        name: the field's Python name.
        field: the field.

    Returns:
        The keys, without duplicates; the Python name is included when the model accepts
        it (``populate_by_name``) or has no alias.
    """
    keys: list[str] = []
    alias = field.validation_alias if field.validation_alias is not None else field.alias
    if isinstance(alias, str):
        keys.append(alias)
    elif isinstance(alias, AliasChoices):
        keys += [c for c in alias.choices if isinstance(c, str)]
    if not keys or model.model_config.get("populate_by_name"):
        keys.append(name)
    return list(dict.fromkeys(keys))


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
        sub = _model_type(field.annotation)
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
        doc = (field.description or _first_line(sub.__doc__)).strip()
        if doc:
            out += [doc, ""]
        out += _option_tables(sub, f"{prefix}.{key}", level)
    return out


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


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
    for _section, attr, _key, title in _SECTIONS:
        names = ", ".join(f"[{n}](#{_anchor(f'{n} {attr[:-1]}')})" for n in getattr(registry, attr))
        toc.append(f"- [{title}](#{title.lower()}): {names}")
    toc.append("- [Stock parsers](#stock-parsers)")
    out += ["\n".join(toc), ""]

    out += ["## service", "",
            "Settings of every process that reads this file: the broker, local state, "
            "partitioning, the HTTP endpoint, timing of leases and heartbeats.", "",
            "```yaml\nservice:\n  broker: redis://redis:6379/0\n  partitions: 8\n```", ""]
    out += _option_tables(ServiceConfig, "service", 3)

    for section, attr, key, title in _SECTIONS:
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

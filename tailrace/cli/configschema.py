"""``tailrace config schema``'s output: the JSON Schema of a config file, from the option tables.

:func:`config_schema` turns every plugin's options model, and the ``service:`` section,
into one JSON Schema (draft 2020-12) for a whole config file, each ``pipeline.*`` entry
checked against the options of the plugin its ``name`` selects; it never rejects a file the
loader accepts. The reading of options models that the configuration reference
(:mod:`tailrace.cli.reference`) shares with it is here too: the config's plugin sections
(:data:`SECTIONS`), the keys that set a field (:func:`accepted_keys`), the options model a
field holds (:func:`options_model`).
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from ..options import parse_byte_size
from ..plugins import Kind, Registry
from ..serviceconfig import ServiceConfig

__all__ = [
    "ENV_REFERENCE",
    "SCHEMA_DIALECT",
    "SECTIONS",
    "SIZE_PATTERN",
    "accepted_keys",
    "config_schema",
    "first_line",
    "options_model",
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
SECTIONS: tuple[tuple[str, Kind, str, str], ...] = (
    ("pipeline.inputs", "inputs", "name", "Inputs"),
    ("pipeline.filters", "filters", "name", "Filters"),
    ("pipeline.outputs", "outputs", "name", "Outputs"),
    ("parsers", "parsers", "format", "Parsers"),
)


def options_model(annotation: Any) -> type[BaseModel] | None:
    """The options model a field holds (directly or as ``Model | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [options_model(a) for a in typing.get_args(annotation)]
        models = [m for m in found if m is not None]
        return models[0] if len(models) == 1 else None
    return None


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


def first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


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
        if first_line(cls.__doc__):
            result["description"] = first_line(cls.__doc__)
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
            sub = options_model(field.annotation)
            if sub is not None:
                add(sub)

    add(ServiceConfig)
    for _section, attr, _key, _title in SECTIONS:
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
            for section, attr, key, _title in SECTIONS if section.startswith("pipeline.")
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

"""Typed option models: the base every plugin's ``Options`` extends, and shared field types.

Every option is declared once, as a pydantic field with its type, default, unit (in the
name: ``flush_ms``, ``max_line_bytes``) and help text (``description``); that declaration
drives parsing, defaults, error messages, the JSON Schema and the reference docs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "ByteSize",
    "FilterOptions",
    "InputOptions",
    "Options",
    "OutputOptions",
    "ParserOptions",
    "Problem",
    "parse_byte_size",
]

#: A problem found by a cross-check: the path below the plugin's entry, and the message.
Problem = tuple[tuple[str | int, ...], str]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_SIZE_POW = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_byte_size(value: Any) -> Any:
    """``1048576``, ``"1MiB"``, ``"1M"``, ``"512k"``, ``"2GB"`` -> bytes (KB = 1000, KiB = 1024).

    A bare ``k``/``m``/``g`` suffix means binary units, as in Fluent Bit (``32k``).
    """
    if isinstance(value, bool) or not isinstance(value, str):
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"expected a size like 65536, '64KiB', '10MB' or '1g', got {value!r}")
    number, unit, binary = float(m.group(1)), m.group(2).lower(), m.group(3)
    decimal = value.strip().lower().endswith("b") and not binary
    base = 1000 if decimal else 1024
    return int(number * base ** _SIZE_POW[unit])


ByteSize = Annotated[int, BeforeValidator(parse_byte_size), Field(ge=0)]


class Options(BaseModel):
    """Base of every options model: unknown keys are errors, values are frozen."""

    # Schemas build on first use: a process builds those of the plugins its config names,
    # not of every plugin it could load (~0.2 s of every start-up).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              defer_build=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # `default_factory=list` (dict, set) as the same empty value made by a Python
        # function: pydantic looks at a factory's signature, and for a builtin that parses
        # its text signature with the tokenizer, whose first use compiles a large regex
        # (~50 ms of every start-up, in the first model that has one).
        for info in cls.model_fields.values():
            factory = _PYTHON_FACTORIES.get(info.default_factory)
            if factory is not None:
                info.default_factory = factory

    def check_config(self, config: Config) -> list[Problem]:
        """Cross-checks against the rest of the config (a parser a filter names, ...).

        Called once the whole config is validated; none by default.
        """
        return []


def _empty_list() -> list[Any]:
    return []


def _empty_dict() -> dict[Any, Any]:
    return {}


def _empty_set() -> set[Any]:
    return set()


_PYTHON_FACTORIES: dict[object, Any] = {list: _empty_list, dict: _empty_dict, set: _empty_set}


class InputOptions(Options):
    """Keys every input has."""

    name: str = Field(description="Plugin name, e.g. `tail`.")
    tag: str | None = Field(
        None,
        description="Tag of the records; `*` expands to the file path with `/` turned into `.`. "
        "Default: the input's alias or plugin name.",
    )
    alias: str | None = Field(None, description="Name of this input in status and metrics.")


class FilterOptions(Options):
    """Keys every filter has."""

    name: str = Field(description="Plugin name, e.g. `grep`.")
    match: str | None = Field("*", description="Tag pattern with `*` wildcards.")
    match_regex: str | None = Field(
        None, description="Regular expression over the tag, instead of `match`."
    )
    alias: str | None = Field(None, description="Name of this filter in status and metrics.")


class OutputOptions(Options):
    """Keys every output has."""

    name: str = Field(description="Plugin name, e.g. `file`.")
    match: str | None = Field("*", description="Tag pattern with `*` wildcards.")
    match_regex: str | None = Field(
        None, description="Regular expression over the tag, instead of `match`."
    )
    alias: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name of this output: its consumer group is `sink:<alias>`. "
        "Default: `<plugin>.<n>` (n counts outputs of the same plugin from 0).",
    )


TYPE_NAMES = ("integer", "float", "bool", "string", "hex")


def _parse_types(value: Any) -> Any:
    """``{code: integer}`` or ``"code:integer size:integer"``; type names are checked."""
    if isinstance(value, str):
        pairs: dict[str, str] = {}
        for item in value.split():
            key, sep, kind = item.rpartition(":")
            if not sep or not key:
                raise ValueError(f"expected KEY:TYPE pairs like 'code:integer', got {item!r}")
            pairs[key] = kind
        value = pairs
    if isinstance(value, dict):
        for key, kind in value.items():
            if kind not in TYPE_NAMES:
                raise ValueError(f"unknown type {kind!r} for field {key!r}; expected one of: "
                                 f"{', '.join(TYPE_NAMES)}")
    return value


class ParserOptions(Options):
    """Keys every parser has (the `parsers:` section)."""

    name: str = Field(description="Name filters refer to this parser by.")
    format: str = Field(description="Parser plugin: `regex`, `json`, `logfmt`, ...")
    time_key: str | None = Field(None, description="Field holding the record's time.")
    time_format: str | None = Field(
        None, description="strptime format of `time_key` (`%L` = fraction of a second)."
    )
    time_keep: bool = Field(False, description="Keep `time_key` in the record after parsing it.")
    time_offset: str | None = Field(
        None, description="Zone offset like `+0200` for times without one (default UTC)."
    )
    types: Annotated[dict[str, str], BeforeValidator(_parse_types)] = Field(
        default_factory=dict,
        description="Field conversions: `integer`, `float`, `bool`, `string`, `hex`; a map "
        "or Fluent Bit's `code:integer size:integer`.",
    )

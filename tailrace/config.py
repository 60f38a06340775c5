"""The pipeline configuration: schema, loading, validation with ``FILE:LINE:COL`` errors.

The YAML has Fluent Bit's shape (``service``, ``pipeline.inputs/filters/outputs``,
``parsers``). Every section and every plugin's options are frozen pydantic models; the
whole file is validated, and every problem collected, before any connection is opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, get_args

from .errors import ConfigError, ConfigProblem
from .options import (
    FilterOptions,
    InputOptions,
    Options,
    OutputOptions,
    ParserOptions,
)
from .plugins import (
    FilterPlugin,
    InputPlugin,
    Kind,
    OutputPlugin,
    ParserPlugin,
    Plugin,
    Registry,
)
from .problems import ProblemCollector, show, validate
from .redaction import mask_secrets, register_config
from .serviceconfig import EmbeddedConfig, ServiceConfig
from .urls import redact_url
from .yamlmarks import expand_env, load

__all__ = [
    "CARRIED_CONFIG_ENV",
    "Config",
    "FilterConfig",
    "InputConfig",
    "OutputConfig",
    "ParserConfig",
    "PluginConfig",
    "carry_config_text",
    "embedded_spec",
    "load_config",
    "parse_config",
    "read_config_text",
    "take_carried_config_text",
]

PluginT = TypeVar("PluginT", bound=Plugin, covariant=True)
OptionsT = TypeVar("OptionsT", bound=Options, covariant=True)


@dataclass(frozen=True)
class PluginConfig(Generic[PluginT, OptionsT]):
    """One configured plugin instance: its class, validated options and stable id."""

    kind: Kind
    index: int
    plugin: type[PluginT]
    options: OptionsT
    id: str

    @property
    def name(self) -> str:
        return self.plugin.name


InputConfig = PluginConfig[InputPlugin, InputOptions]
FilterConfig = PluginConfig[FilterPlugin, FilterOptions]
ParserConfig = PluginConfig[ParserPlugin, ParserOptions]
OutputConfig = PluginConfig[OutputPlugin, OutputOptions]


@dataclass(frozen=True)
class Config:
    """A validated pipeline configuration."""

    file: str
    service: ServiceConfig
    inputs: tuple[InputConfig, ...] = ()
    filters: tuple[FilterConfig, ...] = ()
    outputs: tuple[OutputConfig, ...] = ()
    parsers: dict[str, ParserConfig] = field(default_factory=dict)
    registry: Registry = field(default_factory=Registry)

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config are relative to the config file's folder."""
        return _base_dir(self.file)

    def resolve_path(self, path: str) -> Path:
        return _resolve(self.file, path)

    @property
    def data_dir(self) -> Path:
        return self.resolve_path(self.service.data_dir)

    def output(self, output_id: str) -> OutputConfig:
        for out in self.outputs:
            if out.id == output_id:
                return out
        known = ", ".join(o.id for o in self.outputs) or "none"
        raise KeyError(f"no output named {output_id!r} in {self.file} (outputs: {known})")

    def to_dict(self) -> dict[str, Any]:
        """The resolved pipeline, defaults filled in (for ``config check``)."""

        def dump(pc: PluginConfig[Plugin, Options]) -> dict[str, Any]:
            doc = pc.options.model_dump(mode="json", exclude_none=True)
            # SecretStr dumps as '**********'; a plugin's secret-named plain str must not show.
            return {"id": pc.id, **mask_secrets(doc, type(pc.options))}

        service = self.service.model_dump(mode="json")
        if isinstance(service.get("broker"), str):
            service["broker"] = redact_url(service["broker"])  # config check never shows secrets
        return {
            "service": service,
            "pipeline": {
                "inputs": [dump(p) for p in self.inputs],
                "filters": [dump(p) for p in self.filters],
                "outputs": [dump(p) for p in self.outputs],
            },
            "parsers": [dump(p) for p in self.parsers.values()],
        }


def _plugins(
    kind: Kind, entries: Any, prefix: tuple[str | int, ...], table: Mapping[str, type[PluginT]],
    options_base: type[OptionsT], col: ProblemCollector,
) -> list[PluginConfig[PluginT, OptionsT]]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        col.add(prefix, f"expected a list of {kind}, got {type(entries).__name__}")
        return []
    result: list[PluginConfig[PluginT, OptionsT]] = []
    counts: dict[str, int] = {}
    for i, entry in enumerate(entries):
        path = (*prefix, i)
        if not isinstance(entry, dict):
            col.add(path, f"expected a mapping with a 'name' key, got {show(entry)}")
            continue
        name = entry.get("name")
        if not isinstance(name, str):
            col.add(path, "required key 'name' is missing (the plugin to use)")
            continue
        cls = table.get(name)
        if cls is None:
            known = ", ".join(sorted(table)) or "none"
            col.add((*path, "name"), f"unknown {kind[:-1]} plugin {name!r}; known: {known}")
            continue
        # The registry checked that cls.Options extends options_base.
        options: OptionsT | None = validate(cls.Options, entry, path, col)
        n = counts.get(name, 0)
        counts[name] = n + 1
        if options is not None:
            alias = getattr(options, "alias", None)
            result.append(PluginConfig(kind, i, cls, options, alias or f"{name}.{n}"))
    return result


_TOP_KEYS = ("service", "pipeline", "parsers")
_PIPELINE_KEYS = ("inputs", "filters", "outputs")

def _base_dir(file: str) -> Path:
    return Path(file).resolve().parent if file != "<string>" else Path.cwd()


def _resolve(file: str, path: str) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else _base_dir(file) / p


ReferenceCheck = Callable[[Config], list[tuple[tuple[str | int, ...], str]]]


def parse_config(
    text: str,
    filename: str,
    registry: Registry,
    *,
    env: dict[str, str] | None = None,
) -> Config:
    """Validate config text; raises :class:`ConfigError` listing every problem found."""
    data, marks = load(text, filename)
    data, env_problems = expand_env(data, marks, filename, env)
    col = ProblemCollector(filename, marks)
    col.problems.extend(env_problems)
    if not isinstance(data, dict):
        col.add((), f"expected a mapping with keys {', '.join(_TOP_KEYS)}, got {show(data)}")
        raise ConfigError(col.problems)
    for key in data:
        if key not in _TOP_KEYS:
            col.add((str(key),), f"unknown key {key!r}; expected one of: {', '.join(_TOP_KEYS)}",
                    at_key=True)
    service = validate(ServiceConfig, data.get("service") or {}, ("service",), col)
    pipeline = data.get("pipeline") or {}
    if not isinstance(pipeline, dict):
        col.add(("pipeline",),
                f"expected a mapping of inputs/filters/outputs, got {show(pipeline)}")
        pipeline = {}
    for key in pipeline:
        if key not in _PIPELINE_KEYS:
            col.add(("pipeline", str(key)),
                    f"unknown key {key!r}; expected one of: {', '.join(_PIPELINE_KEYS)}",
                    at_key=True)
    inputs = _plugins("inputs", pipeline.get("inputs"), ("pipeline", "inputs"),
                      registry.inputs, InputOptions, col)
    filters = _plugins("filters", pipeline.get("filters"), ("pipeline", "filters"),
                       registry.filters, FilterOptions, col)
    outputs = _plugins("outputs", pipeline.get("outputs"), ("pipeline", "outputs"),
                       registry.outputs, OutputOptions, col)
    parsers = _parsers(data.get("parsers"), registry, col)
    seen_ids: dict[str, int] = {}
    for out in outputs:
        if out.id in seen_ids:
            col.add(("pipeline", "outputs", out.index, "alias"),
                    f"output name {out.id!r} is used twice (also output {seen_ids[out.id]})")
        seen_ids[out.id] = out.index
    # Cross checks run even when the service section is invalid, so every problem shows.
    config = Config(filename, service or ServiceConfig(), tuple(inputs), tuple(filters),
                    tuple(outputs), parsers, registry)
    # Cross references (a filter naming a parser, ...) are checked by the plugins themselves.
    plugged: list[PluginConfig[Plugin, Options]] = [*inputs, *filters, *outputs]
    for pc in plugged:
        for rel, message in pc.options.check_config(config):
            col.add((*_SECTION[pc.kind], pc.index, *rel), message)
    for check in registry.checks:
        for path, message in check(config):
            col.add(path, message)
    if col.problems:
        # In file order, as an editor walks them (sections are checked one after another).
        raise ConfigError(sorted(col.problems, key=lambda p: (p.line, p.column)))
    # From here on this process masks these values wherever text leaves it (tailrace.redaction).
    register_config([config.service, *(pc.options for pc in (*inputs, *filters, *outputs)),
                     *(pc.options for pc in parsers.values())], [config.service.broker])
    return config


_SECTION: dict[Kind, tuple[str, ...]] = {
    "inputs": ("pipeline", "inputs"),
    "filters": ("pipeline", "filters"),
    "outputs": ("pipeline", "outputs"),
    "parsers": ("parsers",),
}


def _parsers(entries: Any, registry: Registry, col: ProblemCollector) -> dict[str, ParserConfig]:
    result: dict[str, ParserConfig] = {}
    if entries is None:
        return result
    if not isinstance(entries, list):
        col.add(("parsers",), f"expected a list of parsers, got {type(entries).__name__}")
        return result
    for i, entry in enumerate(entries):
        path: tuple[str | int, ...] = ("parsers", i)
        if not isinstance(entry, dict):
            col.add(path, f"expected a mapping with 'name' and 'format', got {show(entry)}")
            continue
        fmt = entry.get("format")
        if not isinstance(fmt, str):
            col.add(path, "required key 'format' is missing (regex, json, logfmt, ...)")
            continue
        cls = registry.parsers.get(fmt)
        if cls is None:
            known = ", ".join(sorted(registry.parsers)) or "none"
            col.add((*path, "format"), f"unknown parser format {fmt!r}; known: {known}")
            continue
        options: ParserOptions | None = validate(cls.Options, entry, path, col)
        if options is None:
            continue
        if options.name in result:
            col.add((*path, "name"), f"parser {options.name!r} is defined twice")
            continue
        result[options.name] = PluginConfig("parsers", i, cls, options, options.name)
    return result


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The config file's text.

    Raises:
        ConfigError: the file is missing, unreadable or not UTF-8.
    """
    name = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(name, 0, 0, "", f"cannot read config: {exc.strerror}")]
                          ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(name, 0, 0, "", f"config is not UTF-8 text: {exc}")]
                          ) from None


def load_config(path: str | os.PathLike[str], registry: Registry,
                *, env: dict[str, str] | None = None) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: the file is missing, unreadable or invalid (every problem listed).
    """
    return parse_config(read_config_text(path), str(path), registry, env=env)


def embedded_spec(path: str) -> tuple[Path, str] | None:
    """The data dir and ``appendfsync`` of the embedded Redis the config file at ``path``
    runs on, read without validating the file (YAML only: no plugin, no model); None when
    it names a broker, or when anything is less than plain (unreadable, not YAML,
    ``${VAR}`` in those values, a value of the wrong type, a config carried over a reload).

    ``tailrace run`` launches the server from this before its imports and the validation,
    so it boots meanwhile; the validated config decides after (tailrace.cli.supervising
    stops a server that does not match it).
    """
    if os.environ.get(CARRIED_CONFIG_ENV):
        return None
    try:
        data, _ = load(read_config_text(path), path)
    except ConfigError:
        return None
    service = (data.get("service") if isinstance(data, dict) else None) or {}
    if not isinstance(service, dict) or service.get("broker") is not None:
        return None
    embedded = service.get("embedded") or {}
    if not isinstance(embedded, dict):
        return None
    data_dir = service.get("data_dir", ServiceConfig.model_fields["data_dir"].default)
    field = EmbeddedConfig.model_fields["appendfsync"]
    fsync = embedded.get("appendfsync", field.default)
    if not isinstance(data_dir, str) or "${" in data_dir or fsync not in get_args(field.annotation):
        return None
    return _resolve(path, data_dir), fsync


#: A process that re-executes itself for a reload hands the new image the config text it
#: validated, in an inherited file whose descriptor this names: the file may have changed
#: again during the drain, and the new image must run what was accepted, not fail on it.
CARRIED_CONFIG_ENV = "TAILRACE_CONFIG_FD"


def carry_config_text(text: str, env: dict[str, str]) -> None:
    """Put ``text`` in an anonymous inherited file and name it in ``env`` (for an exec)."""
    data = text.encode("utf-8")
    fd = os.memfd_create("tailrace-config", 0) if hasattr(os, "memfd_create") else None
    if fd is None:  # no memfd (not Linux): an unlinked temporary file does the same
        import tempfile
        with tempfile.TemporaryFile() as tmp:
            fd = os.dup(tmp.fileno())
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    env[CARRIED_CONFIG_ENV] = str(fd)


def take_carried_config_text() -> str | None:
    """The config text a reloading process carried over its exec, once; else None."""
    value = os.environ.pop(CARRIED_CONFIG_ENV, None)
    if value is None or not value.isdigit():
        return None
    fd = int(value)
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # not ours after all: read the file as a fresh start does

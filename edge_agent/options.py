"""The options of the ``tail`` input, declared once (type, default, unit, help).

These models drive config parsing, defaults, error messages, the JSON Schema and
``docs/agent.md``. Regular expressions are checked here, so a bad one is a config error
with its file, line and key, never a crash at run time.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tailrace.options import ByteSize, InputOptions, Options

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_LINES",
    "DEFAULT_BATCH_WAIT_MS",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_OPEN_FILES",
    "DEFAULT_MEM_BUF_LIMIT_BYTES",
    "DEFAULT_MULTILINE_FLUSH_MS",
    "DEFAULT_PARTIAL_FLUSH_MS",
    "DEFAULT_READ_BYTES",
    "DEFAULT_REFRESH_INTERVAL_S",
    "DEFAULT_ROTATE_WAIT_S",
    "K8S_FIELDS",
    "MultilineOptions",
    "Selector",
    "TailOptions",
    "fluent_regex",
]

DEFAULT_READ_BYTES = 64 * 1024
DEFAULT_BATCH_BYTES = 256 * 1024
DEFAULT_BATCH_LINES = 8192
DEFAULT_BATCH_WAIT_MS = 200
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
DEFAULT_REFRESH_INTERVAL_S = 1.0
DEFAULT_ROTATE_WAIT_S = 5.0
DEFAULT_PARTIAL_FLUSH_MS = 5000
DEFAULT_MULTILINE_FLUSH_MS = 1000
DEFAULT_MULTILINE_MAX_LINES = 500
DEFAULT_MULTILINE_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_OPEN_FILES = 1024
DEFAULT_MEM_BUF_LIMIT_BYTES = 512 * 1024

# Metadata names a path (or a path_regex) can give a file; they feed the selectors and
# become `kubernetes.<name>` in records.
K8S_FIELDS = ("namespace", "pod", "container", "container_id", "pod_id")

# Fluent Bit writes named groups as (?<name>...); Python's re wants (?P<name>...).
_FLUENT_GROUP_RE = re.compile(r"\(\?<(?=[A-Za-z_])")
_TAG_FIELD_RE = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")


def fluent_regex(pattern: str) -> str:
    """``(?<name>...)`` groups rewritten for Python's ``re`` (lookbehinds untouched)."""
    return _FLUENT_GROUP_RE.sub("(?P<", pattern)


def _compiles(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        re.compile(fluent_regex(value))
    except re.error as exc:
        raise ValueError(f"{what} is not a valid regular expression: {exc}") from None
    return value


class Selector(Options):
    """Glob lists over one piece of Kubernetes metadata (namespace, pod or container)."""

    include: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Tail files whose value matches one of these globs.",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Leave files whose value matches one of these globs (wins over include).",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        """``namespaces: [a, b]`` or ``namespaces: a`` mean ``{include: [...]}``."""
        if isinstance(value, str):
            return {"include": [value]}
        if isinstance(value, list):
            return {"include": value}
        return value

    @property
    def restricts(self) -> bool:
        return self.include != ["*"] or bool(self.exclude)


class MultilineOptions(Options):
    """Joining the lines of one message (a stack trace) into one record.

    Exactly one of ``start``, ``continuation`` or ``preset`` says where messages begin.
    """

    start: str | None = Field(
        None, description="Regex matching the first line of a message; other lines continue it."
    )
    continuation: str | None = Field(
        None, description="Regex matching lines that continue the previous message."
    )
    preset: Literal["java", "python", "go"] | None = Field(
        None, description="Built-in rule for `java`, `python` or `go` stack traces."
    )
    flush_ms: int = Field(
        DEFAULT_MULTILINE_FLUSH_MS,
        ge=1,
        description="A message with no new line for this long is complete (also flushed on "
        "shutdown).",
    )
    max_lines: int = Field(
        DEFAULT_MULTILINE_MAX_LINES, ge=1, description="A message is cut after this many lines."
    )
    max_bytes: ByteSize = Field(
        DEFAULT_MULTILINE_MAX_BYTES, ge=64, description="A message is cut before this many bytes."
    )

    @model_validator(mode="before")
    @classmethod
    def _preset_shorthand(cls, value: object) -> object:
        """``multiline: java`` means ``{preset: java}``."""
        if isinstance(value, str):
            return {"preset": value}
        return value

    @field_validator("start", "continuation")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _compiles(value, "the multiline pattern")

    @model_validator(mode="after")
    def _one_rule(self) -> MultilineOptions:
        given = [k for k in ("start", "continuation", "preset") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of multiline.start, multiline.continuation or multiline.preset"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class TailOptions(InputOptions):
    """Options of the ``tail`` input."""

    path: list[str] = Field(
        default_factory=list,
        description="Glob pattern(s) of the files to follow (a list, or one string with commas). "
        "Relative patterns are relative to the config file.",
    )
    path_regex: str | None = Field(
        None,
        description="Regular expression over the full path: with `path`, it filters the glob "
        "matches; alone, the folder before its first special character is walked. Named groups "
        "(`(?<name>...)` or `(?P<name>...)`) become record metadata and `<name>` in the tag.",
    )
    exclude_path: list[str] = Field(
        default_factory=list,
        description="Glob pattern(s) of files to leave alone (matched against the full path "
        "and the file name).",
    )
    read_from_head: bool = Field(
        False,
        description="For files present at the agent's very first start: read from the "
        "beginning (else from the end). Files appearing later, even while the agent was down, "
        "are always read from the beginning.",
    )
    format: Literal["plain", "cri", "docker"] = Field(
        "plain", description="`plain` lines, `cri` (containerd/CRI-O) or `docker` (json-file)."
    )
    namespaces: Selector = Field(
        default_factory=lambda: Selector(),
        description="Kubernetes namespaces to tail: `{include: [globs], exclude: [globs]}` or "
        "a list (= include). Files without that metadata are tailed only when include is `*`.",
    )
    pods: Selector = Field(default_factory=lambda: Selector(), description="Pods to tail.")
    containers: Selector = Field(
        default_factory=lambda: Selector(), description="Containers to tail."
    )
    multiline: MultilineOptions | None = Field(
        None,
        description="Join multi-line messages: `{start: REGEX}`, `{continuation: REGEX}` or a "
        "preset (`java`, `python`, `go`), with `flush_ms`, `max_lines`, `max_bytes`.",
    )
    refresh_interval_s: float = Field(
        DEFAULT_REFRESH_INTERVAL_S,
        gt=0,
        description="How often the paths are re-scanned (with inotify, changes are seen at "
        "once and this is a safety net).",
    )
    inotify: bool = Field(
        True, description="Watch folders with inotify where available (else poll only)."
    )
    rotate_wait_s: float = Field(
        DEFAULT_ROTATE_WAIT_S,
        ge=0,
        description="How long a rotated (renamed or deleted) file stays open after its end, "
        "for late writes.",
    )
    ignore_older_s: float | None = Field(
        None,
        gt=0,
        description="Do not start following files not modified for this long (unset: none "
        "skipped).",
    )
    read_bytes: ByteSize = Field(
        DEFAULT_READ_BYTES,
        ge=4096,
        description="Bytes per read call. Each pass reads up to one batch from every file in "
        "turn (fairness).",
    )
    batch_lines: int = Field(
        DEFAULT_BATCH_LINES, ge=1, le=500_000, description="Messages per batch at most."
    )
    batch_bytes: ByteSize = Field(
        DEFAULT_BATCH_BYTES,
        ge=1024,
        description="File bytes per batch (one stream entry); a batch closes at the first read "
        "that reaches it.",
    )
    batch_wait_ms: int = Field(
        DEFAULT_BATCH_WAIT_MS, ge=0, description="How long a partial batch waits for more lines."
    )
    max_line_bytes: ByteSize = Field(
        DEFAULT_MAX_LINE_BYTES, ge=64,
        description="Longest line kept whole; for `cri` and `docker`, the longest message "
        "(its pieces keep the runtime's time and stream).",
    )
    long_lines: Literal["split", "truncate", "skip"] = Field(
        "split",
        description="A longer line is `split` into pieces, `truncate`d, or `skip`ped (counted).",
    )
    partial_flush_ms: int = Field(
        DEFAULT_PARTIAL_FLUSH_MS,
        ge=1,
        description="A CRI `P` run or docker partial line whose end does not arrive within this "
        "time is emitted as it is (with `multiline`, its `flush_ms` applies).",
    )
    max_open_files: int = Field(
        DEFAULT_MAX_OPEN_FILES,
        ge=1,
        description="Open descriptors at most: idle, fully read files are closed least recently "
        "used first and reopened when they grow (capped below the process's file limit).",
    )
    mem_buf_limit: ByteSize = Field(
        DEFAULT_MEM_BUF_LIMIT_BYTES,
        ge=64 * 1024,
        description="Bytes of lines this input holds in memory at most; above it reading "
        "pauses until batches are committed.",
    )
    path_key: str | None = Field("path", description="Record key for the file path (null: none).")

    @field_validator("path", "exclude_path", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("path_regex")
    @classmethod
    def _path_regex(cls, value: str | None) -> str | None:
        return _compiles(value, "path_regex")

    @model_validator(mode="after")
    def _sources(self) -> TailOptions:
        if not self.path and not self.path_regex:
            raise ValueError("set `path` (globs) or `path_regex` (or both)")
        fields = set(K8S_FIELDS)
        if self.path_regex:
            fields |= set(re.compile(fluent_regex(self.path_regex)).groupindex)
        unknown = [f for f in _TAG_FIELD_RE.findall(self.tag or "") if f not in fields]
        if unknown:
            raise ValueError(
                f"tag {self.tag!r} uses <{unknown[0]}>, which is neither a Kubernetes field "
                f"({', '.join(K8S_FIELDS)}) nor a named group of path_regex"
            )
        return self

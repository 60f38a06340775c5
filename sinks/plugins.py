"""The sinks' built-in outputs, one line each. Third-party outputs come from entry points."""

from __future__ import annotations

from tailrace.plugins import OutputPlugin

from .es import ElasticsearchOutput
from .file import FileOutput
from .stdout import StdoutOutput

__all__ = ["OUTPUTS"]

OUTPUTS: list[type[OutputPlugin]] = [
    ElasticsearchOutput,
    FileOutput,
    StdoutOutput,
]

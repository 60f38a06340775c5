"""The delivery tier: outputs (file, stdout, Elasticsearch) run by sink workers."""

from __future__ import annotations

from .context import OutputContext
from .file import FileOutput, FileOutputOptions
from .plugins import OUTPUTS
from .stdout import StdoutOutput
from .worker import SinkHandler, build_output, run_sink

__all__ = [
    "OUTPUTS",
    "FileOutput",
    "FileOutputOptions",
    "OutputContext",
    "SinkHandler",
    "StdoutOutput",
    "build_output",
    "run_sink",
]

"""The delivery tier: outputs (file, stdout, Elasticsearch) run by sink workers.

Also the dead-letter tools: :mod:`sinks.dlq` reads and prunes the dead-letter streams,
:mod:`sinks.replay` puts dead letters back into the pipeline as RQ jobs, exactly once.
They are imported from those modules, not from here: RQ comes with them, and a sink (or
``tailrace run``, which forks every role from one process) must not pay for it at start.
"""

from __future__ import annotations

from .context import OutputContext
from .es import ElasticsearchOutput, ElasticsearchOutputOptions, MemoryTransport
from .file import FileOutput, FileOutputOptions
from .plugins import OUTPUTS
from .stdout import StdoutOutput
from .worker import SinkHandler, build_output

__all__ = [
    "OUTPUTS",
    "ElasticsearchOutput",
    "ElasticsearchOutputOptions",
    "FileOutput",
    "FileOutputOptions",
    "MemoryTransport",
    "OutputContext",
    "SinkHandler",
    "StdoutOutput",
    "build_output",
]

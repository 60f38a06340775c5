"""The delivery tier: outputs (file, stdout, Elasticsearch) run by sink workers.

Also the dead-letter tools: :mod:`sinks.dlq` reads and prunes the dead-letter streams,
:mod:`sinks.replay` puts dead letters back into the pipeline as RQ jobs, exactly once.
"""

from __future__ import annotations

from .context import OutputContext
from .dlq import DeadLetterEntry, DeadLetterStore, Selection
from .es import ElasticsearchOutput, ElasticsearchOutputOptions, MemoryTransport
from .file import FileOutput, FileOutputOptions
from .plugins import OUTPUTS
from .replay import replay_chunk, replay_ids
from .stdout import StdoutOutput
from .worker import SinkHandler, build_output

__all__ = [
    "OUTPUTS",
    "DeadLetterEntry",
    "DeadLetterStore",
    "ElasticsearchOutput",
    "ElasticsearchOutputOptions",
    "FileOutput",
    "FileOutputOptions",
    "MemoryTransport",
    "OutputContext",
    "Selection",
    "SinkHandler",
    "StdoutOutput",
    "build_output",
    "replay_chunk",
    "replay_ids",
]

"""The delivery tier: outputs (file, stdout, Elasticsearch) run by sink workers.

Also the dead-letter tools: :mod:`sinks.dlq` reads and prunes the dead-letter streams,
:mod:`sinks.replay` puts dead letters back into the pipeline as RQ jobs, exactly once.
They are imported from those modules, not from here: RQ comes with them, and a sink (or
``tailrace run``, which forks every role from one process) must not pay for it at start.
The outputs too (:mod:`sinks.es`, :mod:`sinks.file`, :mod:`sinks.stdout`): a process
imports the ones its config names (``sinks.plugins.OUTPUTS``).
"""

from __future__ import annotations

from .context import OutputContext
from .plugins import OUTPUTS
from .worker import SinkHandler, build_output

__all__ = [
    "OUTPUTS",
    "OutputContext",
    "SinkHandler",
    "build_output",
]

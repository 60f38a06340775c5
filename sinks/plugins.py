"""The sinks' built-in outputs, one line each: name -> module:class.

A process imports an output's module when its config names it (the registry's
:class:`~tailrace.plugins.PluginTable`): a file sink does not load the es output.
Third-party outputs come from entry points.
"""

from __future__ import annotations

__all__ = ["OUTPUTS"]

OUTPUTS: dict[str, str] = {
    "es": "sinks.es:ElasticsearchOutput",
    "file": "sinks.file:FileOutput",
    "stdout": "sinks.stdout:StdoutOutput",
}

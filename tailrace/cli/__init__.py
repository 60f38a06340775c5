"""The command line (click): the one place that composes agent, processors and sinks."""

from __future__ import annotations

from .main import cli, main

__all__ = ["cli", "main"]

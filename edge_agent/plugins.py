"""The agent's built-in inputs, one line each. Third-party inputs come from entry points."""

from __future__ import annotations

from tailrace.plugins import InputPlugin

from .tail import TailInput

__all__ = ["INPUTS"]

INPUTS: list[type[InputPlugin]] = [
    TailInput,
]

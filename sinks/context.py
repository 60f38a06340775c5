"""What an output may use besides its options, handed over when it is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OutputContext"]


@dataclass
class OutputContext:
    """Build-time context of an output.

    Attributes:
        output_id: the output's name (its group is ``sink:<output_id>``).
        state_dir: a folder of its own for local state (e.g. the file output's journal).
        resolve_path: turns a config path into an absolute one (relative to the config).
    """

    output_id: str
    state_dir: Path
    resolve_path: Callable[[str], Path]

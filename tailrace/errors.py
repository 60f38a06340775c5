"""The exceptions tailrace raises, grouped by what the caller should do.

::

    PipelineError                  root: anything tailrace itself raises
    ├── ConfigError                fix the config file (carries every problem found)
    ├── BrokerUnavailable          Redis cannot be reached: retry with backoff
    ├── Fenced                     this worker lost a partition lease: drop the batch
    ├── DeliveryError              an output failed; ``retryable`` says retry or dead-letter
    ├── RecordError                one record or entry is bad: dead-letter it, keep going
    └── StopRequested              asked to stop before there was anything to do: exit 0

Messages say what failed, where (file, key, partition, entry id) and what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "ConfigProblem",
    "DeliveryError",
    "Fenced",
    "PipelineError",
    "RecordError",
    "StopRequested",
]


class PipelineError(Exception):
    """Root of every error tailrace raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file, located by file, 1-based line and column."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(PipelineError):
    """The configuration is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class BrokerUnavailable(PipelineError):
    """Redis cannot be reached or refused the connection; retry with backoff."""


class Fenced(PipelineError):
    """The worker's lease on a partition is gone: another worker owns it now.

    The batch in hand must be dropped; the new owner redoes it.
    """

    def __init__(self, group: str, partition: int) -> None:
        super().__init__(
            f"lease of group {group!r} on partition {partition} was taken over by another "
            "worker; dropping the uncommitted batch (the new owner redoes it)"
        )
        self.group = group
        self.partition = partition


class DeliveryError(PipelineError):
    """An output could not deliver; ``retryable`` says whether to retry or dead-letter."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class RecordError(PipelineError):
    """One record or stream entry is bad: it goes to the dead-letter stream with this reason."""


class StopRequested(PipelineError):
    """A stop was requested before the role got going (e.g. the broker never answered).

    Not a failure: the role has nothing in flight, so it exits cleanly (status 0).
    """

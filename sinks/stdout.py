"""The ``stdout`` output, for trying a pipeline out: records as JSON lines on stdout.

Not exactly-once: a redelivery after a crash prints again. Use ``file`` or ``es`` for that.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from tailrace.options import OutputOptions
from tailrace.outcome import Delivered, Outcome
from tailrace.plugins import OutputPlugin, Record

from .context import OutputContext
from .formats import formatter

__all__ = ["StdoutOutput", "StdoutOutputOptions"]


class StdoutOutputOptions(OutputOptions):
    format: Literal["json", "plain", "template"] = Field("json", description="Line format.")
    template: str = Field("{time} {log}", description="Line template for `format: template`.")


class StdoutOutput(OutputPlugin):
    name: ClassVar[str] = "stdout"
    description: ClassVar[str] = "Print records to standard output (for trying things out)."
    Options: ClassVar[type[StdoutOutputOptions]] = StdoutOutputOptions
    single_writer: ClassVar[bool] = True

    def __init__(self, options: StdoutOutputOptions, ctx: OutputContext) -> None:
        self.format = formatter(options.format, options.template)

    def write_batch(self, records: Sequence[Record]) -> Outcome:
        sys.stdout.buffer.write(self.format(records))
        sys.stdout.buffer.flush()
        return Delivered()

    def close(self) -> None:
        sys.stdout.flush()

"""Multiline rules: which line starts a message, with presets for stack traces.

A rule is built once from :class:`~edge_agent.options.MultilineOptions` and applied by the
decoders' joiner (:mod:`edge_agent.formats`) to each stream of each file on its own, so
a message never mixes lines of two files or two streams. Patterns run on the raw bytes of
a line (after container decoding), so invalid UTF-8 never stops them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .options import MultilineOptions, fluent_regex

__all__ = ["PRESETS", "MultilineRule"]

# Each preset names the lines that continue a message; any other line starts one.
PRESETS: dict[str, bytes] = {
    # "\tat com.x.Y.z(Y.java:10)", "\t... 5 more", "Caused by: ...", "Suppressed: ...",
    # "java.lang.IllegalStateException: boom" (the exception line after the log line).
    "java": rb"^(?:\s|\.\.\.\s*\d+\s+(?:more|common frames omitted)|(?:Caused by|Suppressed):"
            rb"|[\w$.]+(?:Exception|Error|Throwable)(?::|\s*$))",
    # "Traceback (most recent call last):", indented frames and source lines, blank lines,
    # the chained-exception banners and the final "ValueError: bad".
    "python": rb"^(?:\s|$|Traceback \(most recent call last\):"
              rb"|During handling of the above exception|The above exception was the direct cause"
              rb"|[\w.]+(?:Error|Exception|Warning|Exit|Interrupt)(?::|\s*$))",
    # After "panic: ...": blank lines, "goroutine 1 [running]:", frames "main.main()" and
    # their indented file:line, "created by ...", "exit status 2", "[signal SIGSEGV ...".
    "go": rb"^(?:\s|$|goroutine \d+ \[|created by |exit status \d+|\[signal "
          rb"|[\w./*()\[\]-]+\(.*\)$)",
}


@dataclass(frozen=True, slots=True)
class MultilineRule:
    """When a message starts, and how long one may grow."""

    pattern: re.Pattern[bytes]
    pattern_starts: bool  # True: a match starts a message; False: a match continues one
    max_lines: int
    max_bytes: int
    flush_s: float

    @classmethod
    def build(cls, opts: MultilineOptions) -> MultilineRule:
        if opts.preset is not None:
            source, starts = PRESETS[opts.preset], False
        elif opts.start is not None:
            source, starts = fluent_regex(opts.start).encode(), True
        else:
            assert opts.continuation is not None
            source, starts = fluent_regex(opts.continuation).encode(), False
        return cls(re.compile(source), starts, opts.max_lines, opts.max_bytes,
                   opts.flush_ms / 1000)

    def starts(self, line: bytes) -> bool:
        """Whether ``line`` begins a new message (rather than continuing the open one)."""
        hit = self.pattern.match(line) is not None
        return hit if self.pattern_starts else not hit

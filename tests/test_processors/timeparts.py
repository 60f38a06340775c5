"""Shared by the time-format tests: a compiled parser whose strptime fallback is counted."""

from __future__ import annotations

from collections.abc import Callable

from processors.timefast import compile_fast
from processors.timefmt import StrptimeFormat


def counted_fast(fmt: str) -> tuple[Callable[[str], float], StrptimeFormat, list[str]]:
    """The compiled parser of ``fmt``, its reference, and the texts it passed to it."""
    calls: list[str] = []
    reference = StrptimeFormat(fmt)

    def counting(t: str) -> float:
        calls.append(t)
        return reference.parse(t)

    fast = compile_fast(fmt, 0, counting)
    assert fast is not None
    return fast, reference, calls

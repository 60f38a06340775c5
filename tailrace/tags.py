"""Tag matching: Fluent Bit's ``match`` patterns (``*`` wildcards) and ``match_regex``."""

from __future__ import annotations

import re

__all__ = ["TagMatcher"]


class TagMatcher:
    """Decides whether a tag matches; results are cached per tag (tags repeat endlessly)."""

    __slots__ = ("_cache", "_regex", "pattern")

    def __init__(self, match: str | None = "*", match_regex: str | None = None) -> None:
        if match_regex is not None:
            self.pattern = f"regex:{match_regex}"
            self._regex: re.Pattern[str] | None = re.compile(match_regex)
        else:
            glob = match if match is not None else "*"
            self.pattern = glob
            self._regex = (
                None
                if glob == "*"
                else re.compile("".join(".*" if c == "*" else re.escape(c) for c in glob) + r"\Z")
            )
        self._cache: dict[str, bool] = {}

    def __call__(self, tag: str) -> bool:
        hit = self._cache.get(tag)
        if hit is not None:
            return hit
        result = self._regex is None or self._regex.match(tag) is not None
        if len(self._cache) < 65536:
            self._cache[tag] = result
        return result

    @property
    def matches_all(self) -> bool:
        return self._regex is None

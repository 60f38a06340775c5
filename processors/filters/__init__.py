"""Filter plugins: each transforms a batch of records and never talks to Redis.

Each is imported from its own module (``processors.filters.grep``, ...), never from here:
importing this package loads none of them, so a process loads only the filters its config
names (``processors.plugins.FILTERS``).
"""

from __future__ import annotations

__all__: list[str] = []

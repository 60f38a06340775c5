"""Fixtures for the agent tests: an in-process agent on a real Redis, and stream readers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent_harness import AgentHarness  # noqa: E402
from agentconf import tail_input  # noqa: E402


@pytest.fixture
def make_agent(tmp_path: Path, redis_url: str, prefix: str
               ) -> Iterator[Callable[..., AgentHarness]]:
    """Build (not start) agents: ``make_agent([input, ...], partitions=4, url=...)``."""
    made: list[AgentHarness] = []

    def make(inputs: list[dict[str, Any]], url: str | None = None, **kw: Any) -> AgentHarness:
        h = AgentHarness(tmp_path, url or redis_url, prefix, inputs, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.running:
            h.stop()


@pytest.fixture
def tail() -> Callable[..., dict[str, Any]]:
    return tail_input

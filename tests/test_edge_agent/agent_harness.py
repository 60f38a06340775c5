"""An in-process agent on a real Redis, and readers of what it shipped (for the agent tests)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from helpers import wait_for, write_config

from edge_agent import Agent
from tailrace.cli.registry import build_registry
from tailrace.config import Config, load_config
from tailrace.keys import Keys
from tailrace.runtime import Runtime
from tailrace.wire import RawBatch, decode_raw

__all__ = ["AgentHarness", "Shipped", "read_raw"]


@dataclass
class Shipped:
    """What reached the raw streams, batch by batch, in the order they were appended."""

    batches: list[tuple[int, RawBatch]]

    @property
    def lines(self) -> list[bytes]:
        return [ln for _, b in self.batches for ln in b.lines]

    def by_file(self) -> dict[str, list[RawBatch]]:
        out: dict[str, list[RawBatch]] = {}
        for _, b in self.batches:
            out.setdefault(b.file, []).append(b)
        return out

    def records(self) -> list[tuple[str, int, bytes]]:
        """(file identity, offset, line) of every shipped line."""
        return [(b.file, off, ln) for _, b in self.batches
                for off, ln in zip(b.offsets, b.lines, strict=True)]


def _entry_order(entry_id: bytes) -> tuple[int, int]:
    ms, seq = entry_id.split(b"-")
    return int(ms), int(seq)


def read_raw(client: redis.Redis, prefix: str, partitions: int) -> Shipped:
    """Every raw batch, in the order Redis appended them (entry ids across partitions)."""
    keys = Keys(prefix)
    entries: list[tuple[tuple[int, int], int, RawBatch]] = []
    for p in range(partitions):
        for entry_id, fields in client.xrange(keys.raw(p)):
            entries.append((_entry_order(entry_id), p, decode_raw(fields)))
    entries.sort(key=lambda e: e[0])
    return Shipped([(p, b) for _, p, b in entries])


class AgentHarness:
    """A real :class:`Agent` in a thread of the test process, on a real Redis."""

    def __init__(self, tmp: Path, url: str, prefix: str, inputs: list[dict[str, Any]],
                 partitions: int = 4, **service: Any) -> None:
        self.tmp = tmp
        self.url = url
        self.prefix = prefix
        self.partitions = partitions
        self.config_path = write_config(tmp / "agent.yaml", {
            "service": {"data_dir": str(tmp / "data"), "partitions": partitions,
                        "prefix": prefix, "agent_id": "node-1", "publish_interval_s": 0.5,
                        **service},
            "pipeline": {"inputs": inputs,
                         "outputs": [{"name": "stdout", "match": "*"}]},
        })
        self.config: Config = load_config(self.config_path, build_registry(entry_points=False))
        self.agent: Agent | None = None
        self.runtime: Runtime | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> AgentHarness:
        self.runtime = Runtime(self.config, "agent", broker=self.url)
        self.agent = Agent(self.config, self.runtime)
        self.error = None

        def main() -> None:
            assert self.agent is not None
            try:
                self.agent.run()
            except BaseException as exc:  # surfaced by stop()
                self.error = exc

        self.thread = threading.Thread(target=main, name="agent-under-test", daemon=True)
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Like SIGTERM: flush, commit, save, close."""
        if self.runtime is None or self.thread is None:
            return
        self.runtime.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "agent did not stop"
        self.runtime.close()
        self.thread = None
        if self.error is not None:
            raise self.error

    def shipped(self) -> Shipped:
        client = redis.Redis.from_url(self.url)
        try:
            return read_raw(client, self.prefix, self.partitions)
        finally:
            client.close()

    def wait_lines(self, n: int, timeout: float = 30.0) -> Shipped:
        wait_for(lambda: len(self.shipped().lines) >= n, timeout=timeout,
                 message=f"{n} lines in the raw streams")
        return self.shipped()

    def wait_read_to_end(self, path: Path, timeout: float = 30.0) -> None:
        """Until the agent follows the file now at ``path`` and committed all of it."""
        st = path.stat()

        def done() -> bool:
            assert self.agent is not None
            return any(tf.ident.fid.ino == st.st_ino and tf.started and tf.committed == st.st_size
                       for inp in self.agent.inputs for tf in list(inp.table.files.values()))

        wait_for(done, timeout=timeout, message=f"{path} read to its end")

    def state(self) -> str:
        assert self.agent is not None
        return self.agent.status.state

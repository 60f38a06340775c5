"""A dead letter names the plugin that failed, also when the output itself raised."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import redis
from helpers import wait_for
from sinkdata import dead_letters, make_records, preload, sink_config

from tailrace.broker import connect
from tailrace.cli.registry import build_registry
from tailrace.cli.roles import sink_consumer
from tailrace.config import load_config
from tailrace.keys import Keys
from tailrace.lifecycle import Lifecycle
from tailrace.options import OutputOptions
from tailrace.outcome import Outcome


class BrokenOutputOptions(OutputOptions):
    pass


class BrokenOutput:
    """A third-party output with a bug: every write raises."""

    name: ClassVar[str] = "broken"
    description: ClassVar[str] = "Raises on every batch."
    Options: ClassVar[type[BrokenOutputOptions]] = BrokenOutputOptions
    single_writer: ClassVar[bool] = True

    def __init__(self, options: BrokenOutputOptions, ctx: Any) -> None:
        pass

    def write_batch(self, records: list[dict[str, Any]]) -> Outcome:
        raise RuntimeError("objects created in a thread can only be used in that same thread")

    def close(self) -> None:
        pass


def test_entries_an_output_keeps_raising_on_are_dead_lettered_under_its_name(
        tmp_path: Path, redis_url: str, prefix: str, r: redis.Redis) -> None:
    keys = Keys(prefix)
    preload(r, keys, 2, ["db"], [make_records(10, start=i * 10) for i in range(2)])
    cfg = sink_config(tmp_path, prefix, [{"name": "broken", "alias": "db"}], partitions=2,
                      max_deliveries=2)
    registry = build_registry(entry_points=False)
    registry.add("outputs", [BrokenOutput])
    config = load_config(cfg, registry)
    client = connect(redis_url)
    lifecycle = Lifecycle("sink")
    consumer = sink_consumer(config, keys, lifecycle, config.output("db"), client)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(dead_letters(r, keys, 2)) == 2, timeout=60,
                 message="both entries dead-lettered")
    finally:
        stop.set()
        thread.join(timeout=30)
        client.close()
    dls = dead_letters(r, keys, 2)
    assert len(dls) == 2 and {d["plugin"] for d in dls} == {b"db"}, dls
    assert all(d["stage"] == b"sink:db" and b"same thread" in d["error"] for d in dls)

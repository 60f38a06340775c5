"""Prometheus metrics from lifecycle records (prometheus-client, text format).

Counters are kept per thread in the lifecycle records (bumped per batch); this collector
turns the records it is given into metric families at scrape time, so nothing is counted
twice and there is one source of truth for ``/metrics``, ``/api/v1/status`` and
``tailrace status``. Names follow Prometheus conventions: ``tailrace_<what>_total`` for
counters, base units, ``worker``/``role``/``host`` labels.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .lifecycle import STATES

__all__ = ["LifecycleCollector", "metric_name"]

_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(counter: str) -> str:
    """``lines_out`` -> ``tailrace_lines_out_total``."""
    return f"tailrace_{_NAME_RE.sub('_', counter)}_total"


class LifecycleCollector(Collector):
    """Yields metric families for the lifecycle records ``records()`` returns."""

    def __init__(self, records: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self.records = records

    def collect(self) -> Iterator[Any]:
        recs = list(self.records())
        labels = ["worker", "role", "host"]
        state = GaugeMetricFamily("tailrace_worker_state",
                                  "1 for the state the worker is in", labels=[*labels, "state"])
        up = GaugeMetricFamily("tailrace_worker_start_time_seconds",
                               "Start time of the worker (Unix time)", labels=labels)
        age = GaugeMetricFamily("tailrace_worker_heartbeat_age_seconds",
                                "Seconds since the worker last published its state",
                                labels=labels)
        owned = GaugeMetricFamily("tailrace_partitions_owned",
                                  "Partitions the worker owns, per consumer group",
                                  labels=[*labels, "group"])
        counters: dict[str, CounterMetricFamily] = {}
        now = time.time()
        for r in recs:
            lv = [str(r.get("id", "")), str(r.get("role", "")), str(r.get("host", ""))]
            for s in STATES:
                state.add_metric([*lv, s], 1.0 if r.get("state") == s else 0.0)
            up.add_metric(lv, float(r.get("started", 0)))
            age.add_metric(lv, max(0.0, now - float(r.get("updated", now))))
            for group, parts in (r.get("partitions") or {}).items():
                owned.add_metric([*lv, group], float(len(parts)))
            for name, value in (r.get("counters") or {}).items():
                fam = counters.get(name)
                if fam is None:
                    fam = counters[name] = CounterMetricFamily(
                        metric_name(name)[: -len("_total")],
                        f"tailrace counter {name}, summed over the worker's threads",
                        labels=labels)
                fam.add_metric(lv, float(value))
        yield state
        yield up
        yield age
        yield owned
        yield from counters.values()

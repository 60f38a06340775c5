"""The ``es`` output: records to Elasticsearch or OpenSearch through the Bulk API, exactly once.

A sink batch is formatted (:mod:`.formatting`), cut into bulk requests of ``batch_docs`` /
``batch_bytes``, and the requests go out ``workers`` at a time through the transport. Each
answer is judged item by item (:mod:`.retry`): delivered documents (409 included) are done,
rejected ones go back as :class:`~tailrace.outcome.Rejection` (dead letters with the error
type and reason), and only the items that may succeed later come back in a
:class:`~tailrace.outcome.Retry`; the sink worker backs off (``retry_backoff_ms`` doubling
to ``retry_backoff_max_ms``, jittered) and sends just those, for as long as it holds the
partition. The entries are acknowledged only when nothing is left to retry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

from tailrace.errors import DeliveryError
from tailrace.logs import RateLimiter, event
from tailrace.outcome import Delivered, Outcome, Rejection, Retry
from tailrace.plugins import OutputPlugin, Record
from tailrace.retry import Backoff

from ..context import OutputContext
from .config import ElasticsearchOutputOptions
from .formatting import BulkChunk, BulkFormatter
from .retry import judge
from .transport import HttpTransport, Transport

__all__ = ["ElasticsearchOutput"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Sent:
    """What became of one request's documents."""

    delivered: int = 0
    conflicts: int = 0
    retry: list[Record] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    reason: str = ""
    config_problem: bool = False

    def add(self, other: _Sent) -> None:
        self.delivered += other.delivered
        self.conflicts += other.conflicts
        self.retry.extend(other.retry)
        self.rejected.extend(other.rejected)
        self.reason = self.reason or other.reason
        self.config_problem = self.config_problem or other.config_problem


class ElasticsearchOutput(OutputPlugin):
    """Index records into Elasticsearch 7/8/9 or OpenSearch 1/2/3 with the Bulk API."""

    name: ClassVar[str] = "es"
    description: ClassVar[str] = (
        "Index records into Elasticsearch or OpenSearch (Bulk API, create with the record "
        "_id: exactly once)."
    )
    Options: ClassVar[type[ElasticsearchOutputOptions]] = ElasticsearchOutputOptions
    single_writer: ClassVar[bool] = False

    def __init__(self, options: ElasticsearchOutputOptions, ctx: OutputContext,
                 transport: Transport | None = None) -> None:
        self.o = options
        self.output_id = ctx.output_id
        self.formatter = BulkFormatter(options)
        self.transport: Transport = transport if transport is not None else HttpTransport(
            options)
        self.pool = (ThreadPoolExecutor(options.workers, thread_name_prefix=f"es-{ctx.output_id}")
                     if options.workers > 1 else None)
        self.stats: dict[str, int] = {"requests": 0, "delivered": 0, "conflicts": 0,
                                      "retried": 0, "rejected": 0}
        self._limiter = RateLimiter()

    def backoff(self) -> Backoff:
        """The retry policy of failed items (a new one per sink batch)."""
        return Backoff(base_s=self.o.retry_backoff_ms / 1000,
                       cap_s=self.o.retry_backoff_max_ms / 1000)

    def write_batch(self, records: Sequence[Record]) -> Outcome:
        """Send ``records``; never raises for a delivery problem (it becomes the outcome)."""
        rejected: list[Rejection] = []
        chunks = self.formatter.iter_chunks(records, rejected)
        if self.pool is not None:
            # Each request goes out as soon as it is made: the next one is formatted while
            # the cluster indexes this one, up to `workers` in flight.
            futures = [self.pool.submit(self._send, c) for c in chunks]
            results = [f.result() for f in futures]
        else:
            results = [self._send(c) for c in chunks]
        total = _Sent(rejected=rejected)
        for r in results:
            total.add(r)
        s = self.stats
        s["requests"] += len(results)
        s["delivered"] += total.delivered
        s["conflicts"] += total.conflicts
        s["retried"] += len(total.retry)
        s["rejected"] += len(total.rejected)
        self._report(total, len(records))
        if total.retry:
            return Retry(total.reason, total.retry, total.rejected)
        return Delivered(total.rejected)

    def _send(self, chunk: BulkChunk) -> _Sent:
        n = len(chunk.records)
        try:
            resp = self.transport.send(chunk.body)
        except DeliveryError as exc:
            return _Sent(retry=list(chunk.records), reason=str(exc))
        v = judge(resp, n)
        if v.split:
            if n == 1:
                return _Sent(rejected=[Rejection(chunk.records[0], f"es: {v.reason}; this "
                                                 "document alone is too large for the cluster")])
            half = n // 2
            out = _Sent()
            for part in (chunk.records[:half], chunk.records[half:]):
                for sub in self.formatter.build(part).chunks:
                    out.add(self._send(sub))
            return out
        recs = chunk.records
        return _Sent(
            delivered=v.delivered,
            conflicts=v.conflicts,
            retry=[recs[i] for i in v.retry],
            rejected=[Rejection(recs[i], f"es: {reason}") for i, reason in v.rejected],
            reason=v.reason,
            config_problem=v.config_problem,
        )

    def _report(self, sent: _Sent, n: int) -> None:
        if sent.rejected and self._limiter.allow("rejected"):
            event(log, logging.WARNING, "es_bulk_item_error",
                  f"{len(sent.rejected)} of {n} documents refused and dead-lettered; first: "
                  f"{sent.rejected[0].reason} (see `tailrace dlq list`)",
                  output=self.output_id, rejected=len(sent.rejected),
                  suppressed=self._limiter.take_suppressed("rejected"))
        if sent.retry and self._limiter.allow("retry"):
            level = logging.ERROR if sent.config_problem else logging.WARNING
            event(log, level, "es_bulk_retry",
                  f"{len(sent.retry)} of {n} documents not accepted yet, retrying them: "
                  f"{sent.reason}", output=self.output_id, retry=len(sent.retry),
                  delivered=sent.delivered, suppressed=self._limiter.take_suppressed("retry"))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        self.transport.close()

"""Outcomes of processing and delivery: deliver (ack), retry (stay pending), reject (DLQ).

Every filter and output call returns one of these, so the worker loop (which owns the
broker) decides what to ack, what to retry and what to dead-letter in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .record import Record

__all__ = ["Delivered", "FilterResult", "Outcome", "Rejected", "Rejection", "Retry"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """One record that cannot be delivered or processed, with the reason."""

    record: Record
    reason: str


@dataclass(slots=True)
class Delivered:
    """Everything was delivered, except ``rejected`` (dead-letter those, then ack all)."""

    rejected: list[Rejection] = field(default_factory=list)


@dataclass(slots=True)
class Retry:
    """Transient failure: keep ``records`` pending and try them again after a backoff.

    ``records`` is the subset still to deliver (e.g. the failed items of a bulk request);
    the rest of the batch was delivered. ``rejected`` are permanent failures found on the way.
    """

    reason: str
    records: list[Record]
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(slots=True)
class Rejected:
    """The whole batch is permanently refused (e.g. a 400 on the bulk request)."""

    reason: str


Outcome = Delivered | Retry | Rejected


@dataclass(slots=True)
class FilterResult:
    """What a filter gives back: the records that go on, and those to dead-letter."""

    records: list[Record]
    rejected: list[Rejection] = field(default_factory=list)

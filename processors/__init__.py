"""The processing tier: parsers and filters over raw batches, run by scaled-out workers."""

from __future__ import annotations

from .chain import Chain, build_parsers, records_from_batch
from .plugins import FILTERS, PARSERS
from .worker import ProcessorHandler

__all__ = [
    "FILTERS",
    "PARSERS",
    "Chain",
    "ProcessorHandler",
    "build_parsers",
    "records_from_batch",
]

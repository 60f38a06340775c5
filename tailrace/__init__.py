"""tailrace: a log pipeline on Redis Streams, with exactly-once delivery.

The core package: configuration, records and wire format, broker access and key names,
Lua scripts, plugin interfaces, the shared consumer loop, lifecycle records and the CLI.
It imports no role package; ``tailrace.cli`` alone composes the roles.
"""

from __future__ import annotations

from .config import Config, load_config, parse_config
from .errors import (
    BrokerUnavailable,
    ConfigError,
    DeliveryError,
    Fenced,
    PipelineError,
    RecordError,
)
from .keys import Keys
from .outcome import Delivered, FilterResult, Rejected, Rejection, Retry
from .plugins import Registry
from .wire import RawBatch

__version__ = "0.1.0"

__all__ = [
    "BrokerUnavailable",
    "Config",
    "ConfigError",
    "Delivered",
    "DeliveryError",
    "Fenced",
    "FilterResult",
    "Keys",
    "PipelineError",
    "RawBatch",
    "RecordError",
    "Registry",
    "Rejected",
    "Rejection",
    "Retry",
    "__version__",
    "load_config",
    "parse_config",
]

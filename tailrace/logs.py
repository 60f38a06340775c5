"""Logging setup: text or JSON lines, one event name per kind of event, rate limiting.

Events are named ``<component>_<noun>_<verb>[_error]`` (``file_checkpointed``,
``es_bulk_item_error``) and logged with structured fields through :func:`event`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import Any

import orjson

from .redaction import scrub

__all__ = ["RateLimiter", "event", "setup_logging"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        # Text is scrubbed before JSON escapes it (a secret with a quote or a backslash
        # would not match any more), and the line once more for values made text by str.
        doc = {k: scrub(v) if isinstance(v, str) else v for k, v in doc.items()}
        return scrub(orjson.dumps(doc, default=str).decode())


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            base += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return scrub(base)  # no secret in a log line, whoever wrote the message


def setup_logging(level: str = "info", fmt: str = "text", role: str = "") -> None:
    """Configure the root logger once per process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        prefix = f"[{role}] " if role else ""
        handler.setFormatter(
            _TextFormatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # A traceback nobody caught goes to stderr too: scrubbed like every log line.
    sys.excepthook = _scrubbed_excepthook
    threading.excepthook = _scrubbed_thread_excepthook


def _scrubbed_excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    sys.stderr.write(scrub("".join(traceback.format_exception(kind, exc, tb))))


def _scrubbed_thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value,
                                              args.exc_traceback))
    sys.stderr.write(scrub(f"Exception in thread {name}:\n{text}"))


def event(logger: logging.Logger, level: int, name: str, message: str, **fields: Any) -> None:
    """Log event ``name`` with a human message and structured fields."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s: %s", name, message, extra={"fields": fields})


class RateLimiter:
    """Lets an event through at most once per ``interval_s`` per key; counts the rest."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.interval_s:
            self._last[key] = now
            return True
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        return False

    def take_suppressed(self, key: str) -> int:
        return self.suppressed.pop(key, 0)

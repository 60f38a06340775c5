"""An in-memory bulk endpoint: the :class:`~sinks.es.transport.Transport` for unit tests.

It keeps documents by (index, id) with ``create`` semantics (409 when the id exists),
answers like Elasticsearch (per-item ``status`` and ``error``), and fails on request:
whole requests (an HTTP status, or a dropped connection) or single documents (an item
status, a given number of times). The protocol-faithful HTTP server for integration tests
is ``tests/esserver.py``; this one needs no sockets.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

import orjson

from tailrace.errors import DeliveryError

from .transport import BulkResponse

__all__ = ["MemoryTransport"]

_ITEM_TYPES = {
    400: "document_parsing_exception",
    409: "version_conflict_engine_exception",
    429: "es_rejected_execution_exception",
    500: "exception",
    503: "unavailable_shards_exception",
}


class MemoryTransport:
    """Documents in a dict; failures scripted with :meth:`fail_next` and :meth:`fail_item`.

    Thread-safe. ``requests`` counts bodies received, ``attempts[id]`` how often each
    document id was sent, ``created[id]`` how often it was created (never above 1).
    """

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests = 0
        self.attempts: Counter[str] = Counter()
        self.created: Counter[str] = Counter()
        self._request_faults: deque[int | None] = deque()
        self._item_faults: dict[str, deque[tuple[int, str, str]]] = {}
        self._lock = threading.Lock()

    def fail_next(self, *statuses: int | None) -> None:
        """The next requests answer these HTTP statuses (``None``: the connection drops)."""
        with self._lock:
            self._request_faults.extend(statuses)

    def fail_item(self, doc_id: str, status: int, *, times: int = 1, error_type: str = "",
                  reason: str = "injected failure") -> None:
        """Document ``doc_id`` gets ``status`` on its next ``times`` attempts."""
        kind = error_type or _ITEM_TYPES.get(status, "exception")
        with self._lock:
            self._item_faults.setdefault(doc_id, deque()).extend(
                [(status, kind, reason)] * times)

    def send(self, body: bytes) -> BulkResponse:
        with self._lock:
            self.requests += 1
            if self._request_faults:
                status = self._request_faults.popleft()
                if status is None:
                    raise DeliveryError("memory: connection dropped", retryable=True)
                err = {"error": {"type": "injected", "reason": f"injected HTTP {status}"},
                       "status": status}
                return BulkResponse(status, orjson.dumps(err), "memory")
            if not body.endswith(b"\n"):
                err = {"error": {"type": "illegal_argument_exception", "reason":
                                 "The bulk request must be terminated by a newline [\\n]"},
                       "status": 400}
                return BulkResponse(400, orjson.dumps(err), "memory")
            lines = body.split(b"\n")[:-1]
            items = [self._item(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]
        errors = any("error" in next(iter(it.values())) for it in items)
        return BulkResponse(200, orjson.dumps({"errors": errors, "items": items}), "memory")

    def _item(self, action_line: bytes, source_line: bytes) -> dict[str, Any]:
        action = orjson.loads(action_line)
        op, meta = next(iter(action.items()))
        index, doc_id = meta["_index"], meta["_id"]
        self.attempts[doc_id] += 1
        faults = self._item_faults.get(doc_id)
        if faults:
            status, kind, reason = faults.popleft()
            return {op: {"_index": index, "_id": doc_id, "status": status,
                         "error": {"type": kind, "reason": reason}}}
        key = (index, doc_id)
        if op == "create" and key in self.docs:
            return {op: {"_index": index, "_id": doc_id, "status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": f"[{doc_id}]: version conflict, document already exists "
                          "(current version [1])"}}}
        self.docs[key] = orjson.loads(source_line)
        self.created[doc_id] += 1
        return {op: {"_index": index, "_id": doc_id, "status": 201, "result": "created"}}

    def close(self) -> None:
        return None

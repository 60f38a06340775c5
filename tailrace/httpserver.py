"""The per-process HTTP endpoint (``service.http``): /health, /metrics, /api/v1/status.

Off unless configured; meant for loopback or a pod network. ``/health`` answers 200 while
the process is healthy and 503 with the reason when it is not (broker down, a failed
thread, errors over ``service.health_max_errors_per_min``). It never serves secrets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from .logs import event
from .metrics import LifecycleCollector

__all__ = ["HealthPolicy", "StatusServer"]

log = logging.getLogger(__name__)


class HealthPolicy:
    """Healthy unless a worker is broker_down/failed or errors pass a rate threshold."""

    def __init__(self, max_errors_per_min: int) -> None:
        self.max_errors_per_min = max_errors_per_min
        self._errors: deque[tuple[float, int]] = deque()

    def check(self, records: list[dict[str, Any]]) -> tuple[bool, str]:
        for r in records:
            st = r.get("state")
            if st in ("broker_down", "failed"):
                detail = next((t.get("detail") for t in r.get("threads", [])
                               if t.get("state") == st and t.get("detail")), "")
                return False, f"{r.get('role')} {r.get('id')} is {st}" + (
                    f": {detail}" if detail else "")
        total = sum(int((r.get("counters") or {}).get("errors", 0)) for r in records)
        now = time.monotonic()
        self._errors.append((now, total))
        while self._errors and now - self._errors[0][0] > 60:
            self._errors.popleft()
        recent = total - self._errors[0][1]
        if self.max_errors_per_min and recent > self.max_errors_per_min:
            return False, f"{recent} errors in the last minute (limit {self.max_errors_per_min})"
        return True, "ok"


class StatusServer:
    """Serves the endpoints for the records ``records()`` returns (this process, or the
    children of a supervisor)."""

    def __init__(self, address: str, records: Callable[[], Iterable[dict[str, Any]]], *,
                 max_errors_per_min: int = 0,
                 pipeline_status: Callable[[], dict[str, Any]] | None = None) -> None:
        host, _, port = address.rpartition(":")
        self.records = records
        self.policy = HealthPolicy(max_errors_per_min)
        self.pipeline_status = pipeline_status
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LifecycleCollector(records))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return  # no access log: scrapes every few seconds would flood the logs

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    code, ctype, body = server.route(self.path.split("?", 1)[0])
                except Exception as exc:  # a broken endpoint must not kill the worker
                    code, ctype = 500, "text/plain; charset=utf-8"
                    body = f"internal error: {exc}\n".encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http",
                                       daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def route(self, path: str) -> tuple[int, str, bytes]:
        if path == "/health":
            ok, reason = self.policy.check(list(self.records()))
            return (200 if ok else 503), "text/plain; charset=utf-8", (reason + "\n").encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/api/v1/status":
            doc: dict[str, Any] = {"workers": list(self.records())}
            if self.pipeline_status is not None:
                try:
                    doc["pipeline"] = self.pipeline_status()
                except Exception as exc:  # broker down: still answer with what we know
                    doc["pipeline_error"] = str(exc)
            return 200, "application/json", orjson.dumps(doc, default=str)
        return 404, "text/plain; charset=utf-8", b"not found: try /health, /metrics, " \
                                                 b"/api/v1/status\n"

    def start(self) -> StatusServer:
        self.thread.start()
        event(log, logging.INFO, "http_listening",
              f"serving /health /metrics /api/v1/status on port {self.port}")
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

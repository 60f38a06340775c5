"""A protocol-faithful Elasticsearch Bulk API server for tests, benches and the compose docs.

Strict where Elasticsearch is strict: ``Content-Type`` must be NDJSON or JSON (406
otherwise), the body must end with a newline, actions and sources come in pairs, action
lines take one of ``index``/``create``/``update``/``delete`` with known metadata only,
unknown query parameters are refused, ``Content-Encoding: gzip`` is understood, bodies
over ``http.max_content_length`` get 413, and credentials are checked when configured
(basic or API key, 401 ``security_exception``). Per-item answers come from
:class:`esdocs.DocStore` (409 on create conflicts, mapping errors, data streams).
``filter_path`` is applied to answers. Also: ``GET /``, ``GET [/{index}]/_count``,
``GET /{index}/_doc/{id}``, ``PUT /{index}`` (mappings), ``PUT /_index_template/{name}``
(patterns, ``data_stream``, mappings), ``DELETE /{index}``, ``_refresh``. Checked against
real Elasticsearch 8.19 and OpenSearch 2.19/3.6 (``tests/test_sinks/test_es_real_servers.py``);
where they differed, the comment at the fix says how.

Faults (:class:`Fault`) make it answer 429/5xx, fail single items, answer slowly, or drop
the connection before or after indexing; set them in Python (``server.add_fault``) or over
HTTP (``POST /_tailrace/faults`` with a JSON list; ``DELETE`` clears; ``GET
/_tailrace/stats``). Standalone: ``python tests/esserver.py --port 9200``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import signal
import socket
import ssl
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from esdocs import DocStore, run_bulk
from esparts import Fault, apply_filter_path

__all__ = ["EsServer", "Fault", "apply_filter_path"]

_BULK_PARAMS = {"filter_path", "pipeline", "refresh", "routing", "timeout", "pretty",
                "wait_for_active_shards", "require_alias", "_source", "_source_includes",
                "_source_excludes", "error_trace", "human", "require_data_stream",
                "list_executed_pipelines", "include_source_on_error"}
_NDJSON_TYPES = ("application/x-ndjson", "application/json",
                 "application/vnd.elasticsearch+x-ndjson", "application/vnd.elasticsearch+json")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        # As Elasticsearch does: no Nagle delay (else a small answer waits for the
        # client's delayed ACK, 40 ms a request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        body = b"" if doc is None else orjson.dumps(doc)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        owner = self.server.owner
        if not owner.opensearch and owner.major >= 7:
            self.send_header("X-Elastic-Product", "Elasticsearch")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self._headers_buffer.append(b"\r\n")  # end of headers; sent with the body at once
        self._headers_buffer.append(body)
        self.flush_headers()

    def _error(self, status: int, kind: str, reason: str, **extra: str) -> None:
        err = {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}
        self._send(status, {"error": err, "status": status}, extra or None)

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(parts)
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if len(data) > self.server.owner.max_content_length:
            self.close_connection = True
            self._send(413, None, {"Connection": "close"})
            return None
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                self._error(400, "illegal_argument_exception", f"bad gzip body: {exc}")
                return None
        return data

    def _authorized(self) -> bool:
        owner = self.server.owner
        if not owner.users and not owner.api_keys:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        try:
            decoded = base64.b64decode(value).decode() if value else ""
        except ValueError:
            decoded = ""
        user, _, secret = decoded.partition(":")
        if scheme == "Basic" and owner.users.get(user) == secret and user:
            return True
        if scheme == "ApiKey" and owner.api_keys.get(user) == secret and user:
            return True
        path = urlsplit(self.path).path
        reason = (f"unable to authenticate user [{user}] for REST request [{path}]" if header
                  else f"missing authentication credentials for REST request [{path}]")
        self._error(401, "security_exception", reason,
                    **{"WWW-Authenticate": 'Basic realm="security" charset="UTF-8"'})
        return False

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_HEAD(self) -> None:
        self._send(200, None)

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        owner = self.server.owner
        if parts[:1] == ["_tailrace"]:
            return self._control(method, parts[1:])
        if not self._authorized():
            return None
        if parts and parts[-1] == "_bulk" and len(parts) <= 2:
            if method not in ("POST", "PUT"):
                return self._error(405, "illegal_argument_exception",
                                   f"Incorrect HTTP method for uri [{url.path}] and method "
                                   f"[{method}], allowed: [POST, PUT]")
            return self._bulk(parts[0] if len(parts) == 2 else None, query)
        body = self._body() if method in ("POST", "PUT") else b""
        if body is None:
            return None
        with owner.lock:
            if not parts and method == "GET":
                return self._send(200, owner.info())
            if parts[-1:] == ["_count"]:
                pattern = parts[0] if len(parts) == 2 else "*"
                return self._send(200, {"count": owner.store.count(pattern)})
            if parts[-1:] == ["_refresh"]:
                return self._send(200, {"_shards": {"total": 1, "successful": 1, "failed": 0}})
            if len(parts) == 3 and parts[1] == "_doc" and method == "GET":
                src = owner.store.get(parts[0], parts[2])
                found = src is not None
                return self._send(200 if found else 404, {"_index": parts[0], "_id": parts[2],
                                                          "found": found, "_source": src})
            if len(parts) == 2 and parts[0] == "_index_template" and method == "PUT":
                owner.store.put_template(parts[1], orjson.loads(body) if body else {})
                return self._send(200, {"acknowledged": True})
            if len(parts) == 1 and method == "PUT":
                doc = orjson.loads(body) if body else {}
                owner.store.put_mapping(parts[0], doc.get("mappings", {}).get("properties", {}))
                return self._send(200, {"acknowledged": True, "index": parts[0]})
            if len(parts) == 1 and method == "DELETE":
                owner.store.delete(parts[0])
                return self._send(200, {"acknowledged": True})
        return self._error(400, "illegal_argument_exception",
                           f"no handler found for uri [{url.path}] and method [{method}]")

    def _control(self, method: str, parts: list[str]) -> None:
        owner = self.server.owner
        if parts == ["faults"] and method == "POST":
            body = self._body() or b"[]"
            for spec in orjson.loads(body):
                owner.add_fault(Fault(**spec))
            return self._send(200, {"faults": len(owner.faults)})
        if parts == ["faults"] and method == "DELETE":
            owner.clear_faults()
            return self._send(200, {"faults": 0})
        if parts == ["stats"]:
            return self._send(200, owner.stats())
        return self._error(404, "not_found", "unknown control path")

    def _bulk(self, default_index: str | None, query: dict[str, str]) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.requests += 1
            owner.concurrent += 1
            owner.max_concurrent = max(owner.max_concurrent, owner.concurrent)
        try:
            self._bulk_request(default_index, query)
        finally:
            with owner.lock:
                owner.concurrent -= 1

    def _bulk_request(self, default_index: str | None, query: dict[str, str]) -> None:
        owner = self.server.owner
        ctype = self.headers.get("Content-Type")
        if ctype is None:
            self._body()
            return self._error(406, "illegal_argument_exception", "Content-Type header is missing")
        media = ctype.split(";")[0].strip().lower()
        compat = "vnd.elasticsearch" in media
        if media not in _NDJSON_TYPES or (compat and owner.opensearch):
            # OpenSearch 2 and 3 refuse Elasticsearch's compatibility media types (406).
            self._body()
            return self._send(406, {"error": f"Content-Type header [{ctype}] is not supported",
                                    "status": 406})
        accept = self.headers.get("Accept", "")
        if compat and "compatible-with" in ctype and "compatible-with" not in accept:
            # Elasticsearch 8: a compatible version on Content-Type needs one on Accept too.
            self._body()
            return self._error(400, "media_type_header_exception",
                               "Invalid media-type value on headers [Content-Type, Accept]")
        unknown = sorted(set(query) - _BULK_PARAMS)
        body = self._body()
        if body is None:
            return None
        if unknown:
            return self._error(400, "illegal_argument_exception",
                               f"request [/_bulk] contains unrecognized parameter: [{unknown[0]}]")
        request_faults = owner.take_request_faults()
        for f in request_faults:
            if f.status is not None:
                kind = f.error_type or ("es_rejected_execution_exception" if f.status == 429
                                        else "exception")
                return self._error(f.status, kind, f.reason)
            if f.drop == "before":
                self.close_connection = True
                return None
        if not body.endswith(b"\n"):
            return self._error(400, "illegal_argument_exception",
                               "The bulk request must be terminated by a newline [\\n]")
        started = time.monotonic()
        owner.inflight += 1
        try:
            with owner.lock:
                result = owner.bulk(body, default_index)
        finally:
            owner.inflight -= 1
        if isinstance(result, tuple):
            return self._error(400, *result)
        delay = sum(f.delay_s for f in request_faults)
        if delay:
            time.sleep(delay)
        if any(f.drop == "after" for f in request_faults):
            self.close_connection = True
            return None
        result["took"] = int((time.monotonic() - started) * 1000)
        return self._send(200, apply_filter_path(result, query.get("filter_path")))


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    owner: EsServer


class EsServer:
    """The server; ``start()`` serves in a thread, ``url`` is where."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, version: str = "8.15.0",
                 opensearch: bool = False, users: dict[str, str] | None = None,
                 api_keys: dict[str, str] | None = None, certfile: str | None = None,
                 keyfile: str | None = None, max_content_length: int = 100 * 1024 * 1024,
                 data_streams: tuple[str, ...] = ("logs-*-*",)) -> None:
        self.version = version
        self.major = int(version.split(".")[0])
        self.opensearch = opensearch
        self.users = users or {}
        self.api_keys = api_keys or {}
        self.max_content_length = max_content_length
        self.store = DocStore(major=8 if opensearch else self.major, opensearch=opensearch,
                              # Elasticsearch's default distribution ships a logs-*-* data
                              # stream template; OpenSearch ships none (PUT one: put_template).
                              data_streams=() if opensearch else data_streams)
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.requests = 0  # bulk requests received
        self.inflight = 0  # bulk bodies being indexed
        self.concurrent = 0  # bulk requests being handled (read, indexed, answered)
        self.max_concurrent = 0
        self.bodies: list[int] = []  # documents per bulk request received
        self._http = _HttpServer((host, port), _Handler)
        self._http.owner = self
        self.tls = certfile is not None
        if certfile is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self._http.socket = ctx.wrap_socket(self._http.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def start(self) -> EsServer:
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,),
                                        name="esserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> EsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def info(self) -> dict[str, Any]:
        version: dict[str, Any] = {"number": self.version, "build_flavor": "default",
                                   "lucene_version": "9.11.1"}
        if self.opensearch:
            version = {"distribution": "opensearch", "number": self.version}
        return {"name": "esserver", "cluster_name": "tailrace-test", "version": version,
                "tagline": "The OpenSearch Project: https://opensearch.org/" if self.opensearch
                else "You Know, for Search"}

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_request_faults(self) -> list[Fault]:
        with self.lock:
            return [f for f in self.faults if not f.is_item and f.take()]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            s = self.store
            return {"requests": self.requests, "docs": s.count(), "inflight": self.inflight,
                    "max_concurrent": self.max_concurrent,
                    "created": sum(s.created.values()), "attempts": sum(s.attempts.values()),
                    "statuses": {str(k): v for k, v in s.statuses.items()},
                    "faults": [asdict(f) for f in self.faults]}

    def bulk(self, body: bytes, default_index: str | None) -> dict[str, Any] | tuple[str, str]:
        """Run one bulk body (lock held); an error tuple (type, reason) fails the request."""
        items = run_bulk(self.store, body, default_index, [f for f in self.faults if f.is_item],
                         allow_type=self.major < 8 and not self.opensearch)
        if isinstance(items, tuple):
            return items
        self.bodies.append(len(items))
        errors = any("error" in next(iter(it.values())) for it in items)
        return {"took": 0, "errors": errors, "items": items}

def main() -> None:
    ap = argparse.ArgumentParser(description="A Bulk API server for tests (see module doc).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9200)
    ap.add_argument("--version", default="8.15.0", help="Elasticsearch version to claim.")
    ap.add_argument("--opensearch", action="store_true", help="Answer like OpenSearch.")
    ap.add_argument("--user", action="append", default=[], help="user:password (repeatable).")
    ap.add_argument("--api-key", action="append", default=[], help="id:key (repeatable).")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--fault", action="append", default=[],
                    help='A Fault as JSON, e.g. \'{"item_status": 429, "every": 100}\'.')
    args = ap.parse_args()
    server = EsServer(host=args.host, port=args.port, version=args.version,
                      opensearch=args.opensearch,
                      users=dict(u.split(":", 1) for u in args.user),
                      api_keys=dict(k.split(":", 1) for k in args.api_key),
                      certfile=args.tls_cert, keyfile=args.tls_key)
    for spec in args.fault:
        server.add_fault(Fault(**json.loads(spec)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"esserver listening on {server.url}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()

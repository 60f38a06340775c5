"""Sending bulk bodies: a one-method transport, and its HTTP implementation on urllib3.

:class:`Transport` is all the output needs (send a body, get the status and the response
bytes), so tests swap in :class:`~sinks.es.memory.MemoryTransport`. :class:`HttpTransport`
keeps a pool of ``workers`` connections per host, spreads requests round-robin over the
hosts that answer, and fails over at once to the next host when one refuses, times out or
answers 502/503/504 (a failed host is skipped for ``host_cooldown_s``). Resending a body to
another host is safe: every action is a ``create`` with a fixed ``_id``.

Why urllib3 and not the official client: see ``docs/outputs.md`` (one HTTP layer that speaks
to Elasticsearch 7, 8, 9 and OpenSearch 1, 2 alike; the official clients each check the
server's product and major version).
"""

from __future__ import annotations

import base64
import gzip
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, urlsplit

import orjson

if TYPE_CHECKING:
    import urllib3
# urllib3 (~50 ms of imports: http.client, ssl, email) is imported where a transport uses
# it: the registry imports this module, and every process (each role forked from
# `tailrace run` too) would pay for it at start even without an es output.

from tailrace import __version__
from tailrace.errors import DeliveryError
from tailrace.logs import RateLimiter, event

from .config import ElasticsearchOutputOptions

__all__ = ["FILTER_PATH", "BulkResponse", "HttpTransport", "Transport", "auth_header",
           "identify_nodes", "identify_root", "support_problem"]

log = logging.getLogger(__name__)

# Only what the verdict needs: per-item status and error (a tenth of the full answer).
FILTER_PATH = "errors,items.*.status,items.*.error"
_FAILOVER_STATUS = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class BulkResponse:
    """The answer to one bulk request: HTTP status, body (decompressed), which host."""

    status: int
    body: bytes
    host: str


class Transport(Protocol):
    """Sends one bulk body. Thread-safe: ``workers`` requests may be in flight at once."""

    def send(self, body: bytes) -> BulkResponse:
        """POST ``body`` (NDJSON) to the bulk endpoint.

        Raises:
            DeliveryError: no host gave an HTTP answer (refused, timed out, dropped); the
                message names each host and what happened. Always ``retryable``.
        """
        ...

    def close(self) -> None: ...


def auth_header(options: ElasticsearchOutputOptions) -> str | None:
    """The ``Authorization`` header value for the configured credentials, if any."""
    if options.api_key is not None:
        key = options.api_key.get_secret_value()
        encoded = base64.b64encode(key.encode()).decode() if ":" in key else key
        return f"ApiKey {encoded}"
    if options.http_user is not None and options.http_passwd is not None:
        pair = f"{options.http_user}:{options.http_passwd.get_secret_value()}"
        return "Basic " + base64.b64encode(pair.encode()).decode()
    return None


class _Host:
    __slots__ = ("base", "bulk_url", "dead_until", "label", "server")

    def __init__(self, base: str, query: str) -> None:
        parts = urlsplit(base)
        self.label = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self.base = base
        self.bulk_url = f"{base}/_bulk?{query}"
        self.dead_until = 0.0
        self.server: str | None = None  # "Elasticsearch 8.19.21", once it answered GET /


def identify_root(doc: object) -> str | None:
    """The product and version in a ``GET /`` answer, or None if it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), dict):
        return None
    version = doc["version"]
    number = version.get("number")
    if not isinstance(number, str):
        return None
    # OpenSearch says so in version.distribution; Elasticsearch has no such field (and
    # its X-Elastic-Product header is not relied on: proxies drop it, 7.x before 7.14 lacks it).
    product = "OpenSearch" if version.get("distribution") == "opensearch" else "Elasticsearch"
    return f"{product} {number}"


def identify_nodes(doc: object) -> str | None:
    """Product and version from ``GET /_nodes/_local`` (for servers without ``GET /``)."""
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, dict) or not nodes:
        return None
    node = next(iter(nodes.values()))
    if not isinstance(node, dict) or not isinstance(node.get("version"), str):
        return None
    # Elasticsearch has reported build_flavor since 6.3; OpenSearch dropped it.
    product = "Elasticsearch" if "build_flavor" in node else "OpenSearch"
    return f"{product} {node['version']}"


def support_problem(server: str) -> str | None:
    """Why the output cannot write to ``server`` as it is, if it cannot."""
    product, _, number = server.partition(" ")
    try:
        major = int(number.split(".")[0])
    except ValueError:
        return None
    if product == "Elasticsearch" and major < 7:
        return ("Elasticsearch before 7 needs a mapping _type in every bulk action, which "
                "tailrace does not send: upgrade to 7 or later")
    return None


class HttpTransport:
    """Bulk requests over HTTP(S) with urllib3: connection pools, TLS, auth, gzip, failover."""

    def __init__(self, options: ElasticsearchOutputOptions) -> None:
        import urllib3

        query = "filter_path=" + FILTER_PATH
        if options.pipeline:
            query += "&pipeline=" + quote(options.pipeline, safe="")
        self.hosts = [_Host(h, query) for h in options.hosts]
        self.cooldown_s = options.host_cooldown_s
        self.gzip = options.compress == "gzip"
        self.headers = {
            "Content-Type": "application/x-ndjson",
            "Accept": "application/json",
            "User-Agent": f"tailrace/{__version__}",
        }
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
            self.headers["Accept-Encoding"] = "gzip"
        auth = auth_header(options)
        if auth is not None:
            self.headers["Authorization"] = auth
        tls: dict[str, object] = {}
        if any(h.label.startswith("https:") for h in self.hosts):
            if options.tls_verify:
                tls["cert_reqs"] = "CERT_REQUIRED"
                if options.tls_ca_file:
                    tls["ca_certs"] = options.tls_ca_file
            else:
                tls["cert_reqs"] = "CERT_NONE"
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
                event(log, logging.WARNING, "es_tls_verify_disabled",
                      "tls_verify is off: the identity of the Elasticsearch hosts is not "
                      "checked; set tls_ca_file instead where you can")
            if options.tls_cert_file:
                tls["cert_file"] = options.tls_cert_file
                tls["key_file"] = options.tls_key_file
        self.pool = urllib3.PoolManager(
            num_pools=max(len(self.hosts), 1),
            maxsize=options.workers,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=options.connect_timeout_s, read=options.timeout_s),
            **tls,  # type: ignore[arg-type]
        )
        self._rr = itertools.count()
        self._lock = threading.Lock()
        self._identify_lock = threading.Lock()
        self._limiter = RateLimiter()
        self._probe_timeout = urllib3.Timeout(connect=options.connect_timeout_s,
                                              read=min(options.timeout_s, 10.0))

    def _order(self) -> list[_Host]:
        """Hosts to try: live ones round-robin, then resting ones, soonest back first."""
        n = len(self.hosts)
        with self._lock:
            start = next(self._rr) % n
        now = time.monotonic()
        ring = [self.hosts[(start + i) % n] for i in range(n)]
        live = [h for h in ring if h.dead_until <= now]
        resting = sorted((h for h in ring if h.dead_until > now), key=lambda h: h.dead_until)
        return live + resting

    def _rest(self, host: _Host, why: str) -> None:
        host.dead_until = time.monotonic() + self.cooldown_s
        if self._limiter.allow(host.label):
            event(log, logging.WARNING, "es_host_failed",
                  f"{host.label}: {why}; trying the other hosts, back to this one in "
                  f"{self.cooldown_s:.0f}s", host=host.label)

    def send(self, body: bytes) -> BulkResponse:
        import urllib3

        data = gzip.compress(body, compresslevel=1) if self.gzip else body
        failures: list[str] = []
        last: BulkResponse | None = None
        for host in self._order():
            try:
                resp = self._request(host, data)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                why = _describe(exc)
                failures.append(f"{host.label}: {why}")
                self._rest(host, why)
                continue
            answer = BulkResponse(resp.status, resp.data, host.label)
            if resp.status in _FAILOVER_STATUS:
                failures.append(f"{host.label}: HTTP {resp.status}")
                self._rest(host, f"answered HTTP {resp.status}")
                last = answer
                continue
            host.dead_until = 0.0
            if host.server is None:
                self.identify(host)
            return answer
        if last is not None:
            return last  # every host answered 502/503/504: the verdict retries it
        raise DeliveryError("no Elasticsearch host answered the bulk request: "
                            + "; ".join(failures), retryable=True)

    def identify(self, host: _Host) -> None:
        """Find out what answers at ``host`` (``GET /``) and say it in the log, once.

        Called after the host's first bulk answer, so a cluster that is down when the sink
        starts delays nothing. Only logs: the bulk dialect is the same for every supported
        server (no ``_type``, plain ``application/x-ndjson``, which OpenSearch requires:
        it answers 406 to Elasticsearch's compatibility media types).
        """
        with self._identify_lock:
            if host.server is not None:
                return
            import urllib3

            headers = {k: v for k, v in self.headers.items() if not k.startswith("Content")}
            found = None
            try:
                r = self.pool.request("GET", host.base + "/", headers=headers,
                                      timeout=self._probe_timeout)
                found = identify_root(_json(r.data)) if r.status == 200 else None
                if found is None:
                    # Elasticsearch's integration-test distribution has no GET / (405: the
                    # rest-root module is not in it): the nodes API says the same.
                    r = self.pool.request(
                        "GET", host.base + "/_nodes/_local?filter_path=nodes.*.version,"
                        "nodes.*.build_flavor", headers=headers, timeout=self._probe_timeout)
                    found = identify_nodes(_json(r.data)) if r.status == 200 else None
            except (urllib3.exceptions.HTTPError, OSError):
                return  # asked again after the next answer
            host.server = found or "an unknown server"
        if found is None:
            event(log, logging.WARNING, "es_server_unknown",
                  f"{host.label}: could not tell which server this is (GET / and "
                  f"GET /_nodes/_local answered HTTP {r.status}); writing to it as to "
                  "Elasticsearch 8", host=host.label)
            return
        problem = support_problem(found)
        event(log, logging.ERROR if problem else logging.INFO, "es_server_found",
              f"{host.label}: {found}" + (f"; {problem}" if problem else ""),
              host=host.label, server=found)

    @property
    def servers(self) -> dict[str, str]:
        """What each host turned out to be (hosts not identified yet are left out)."""
        return {h.label: h.server for h in self.hosts if h.server is not None}

    def _request(self, host: _Host, data: bytes) -> urllib3.BaseHTTPResponse:
        import urllib3

        try:
            return self.pool.request("POST", host.bulk_url, body=data, headers=self.headers)
        except urllib3.exceptions.ProtocolError:
            # Most often a kept-alive connection the server (or a proxy) closed while idle:
            # once more on a fresh one. Safe to resend: every action is a create with _id.
            return self.pool.request("POST", host.bulk_url, body=data, headers=self.headers)

    def close(self) -> None:
        self.pool.clear()


def _json(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _describe(exc: BaseException) -> str:
    """A short, secret-free account of a connection failure, with what to check."""
    import urllib3

    e = urllib3.exceptions
    if isinstance(exc, e.SSLError):
        return (f"TLS handshake failed ({exc}); check tls_ca_file (or tls_verify) and that "
                "the host name matches the certificate")
    if isinstance(exc, e.NewConnectionError):  # before its base, ConnectTimeoutError
        return "connection refused or host unknown; is Elasticsearch running there?"
    if isinstance(exc, e.ConnectTimeoutError):
        return "connection timed out (connect_timeout_s); is the host reachable?"
    if isinstance(exc, e.ReadTimeoutError):
        return "no answer within timeout_s (the cluster may be overloaded); will retry"
    if isinstance(exc, e.ProtocolError):
        return f"connection dropped before the answer ({exc.args[0] if exc.args else exc})"
    return f"{type(exc).__name__}: {exc}"

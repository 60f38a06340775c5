"""What a broker URL names: its deployment, seeds, credentials and options (no I/O).

The forms ``service.broker`` accepts::

    redis://[user:pass@]host:port/db   rediss://…   unix:///path/redis.sock
        one server (or a proxy in front of one)
    redis+cluster://[user:pass@]host:port,host:port,…      (rediss+cluster:// for TLS)
        Redis Cluster: any reachable node is a seed
    redis+sentinel://[user:pass@]host:port,host:port,…/SERVICE[/db][?sentinel_password=…]
        Sentinel: the sentinels are asked for SERVICE's master

Parsing is kept apart from :mod:`tailrace.topology` (which builds the clients) because the
config checks every URL while it validates, before anything connects.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from .urls import redact_url

__all__ = ["BrokerAddress", "join_broker_urls", "parse_broker_url"]

_CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
_SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_PLAIN_SCHEMES = ("redis", "rediss", "unix")
KNOWN_SCHEMES = (*_PLAIN_SCHEMES, *_CLUSTER_SCHEMES, *_SENTINEL_SCHEMES)


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed broker URL.

    ``kind`` is ``single`` (the URL is handed to redis-py as is), ``cluster`` or
    ``sentinel``; ``hosts`` are the seeds (cluster nodes or sentinels).
    """

    kind: str
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    tls: bool = False
    service: str = ""
    db: int = 0
    options: dict[str, str] = field(default_factory=dict)


def _hosts(netloc: str, url: str) -> tuple[tuple[str, int], ...]:
    out = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [v6]:port
            host, _, port = part[1:].partition("]:")
        else:
            host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{redact_url(url)!r}: expected host:port, got {part!r}")
        out.append((host, int(port)))
    if not out:
        raise ValueError(f"{redact_url(url)!r}: no host:port given")
    return tuple(out)


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse a broker URL (see the module docstring for the forms).

    Raises:
        ValueError: an unknown scheme, a malformed host list, a Sentinel URL without its
            service name; the message quotes the URL with its password hidden.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in KNOWN_SCHEMES:
        raise ValueError(f"{redact_url(url)!r}: unknown broker URL scheme {scheme!r}; expected "
                         f"one of {', '.join(s + '://' for s in KNOWN_SCHEMES)}")
    if scheme in _PLAIN_SCHEMES:
        return BrokerAddress("single", url)
    creds, _, hostpart = rest.rpartition("@")
    username = password = None
    if creds:
        user, colon, pw = creds.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(pw) if colon else None
    hostpart, _, query = hostpart.partition("?")
    netloc, _, path = hostpart.partition("/")
    options = dict(urllib.parse.parse_qsl(query))
    hosts = _hosts(netloc, url)
    if scheme in _CLUSTER_SCHEMES:
        if path.strip("/") not in ("", "0"):
            raise ValueError(f"{redact_url(url)!r}: Redis Cluster has only database 0; "
                             "remove the path")
        return BrokerAddress("cluster", url, hosts, username, password,
                             _CLUSTER_SCHEMES[scheme], options=options)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError(f"{redact_url(url)!r}: a Sentinel URL names its master service "
                         "after the hosts: redis+sentinel://host:port,host:port/SERVICE")
    db = parts[1] if len(parts) > 1 else "0"
    if not db.isdigit() or len(parts) > 2:
        raise ValueError(f"{redact_url(url)!r}: expected /SERVICE or /SERVICE/DB after "
                         f"the hosts, got /{path}")
    return BrokerAddress("sentinel", url, hosts, username, password,
                         _SENTINEL_SCHEMES[scheme], service=parts[0], db=int(db),
                         options=options)


def join_broker_urls(urls: list[str]) -> str:
    """One URL from a list naming the same deployment (``service.broker`` as a YAML list).

    ``[redis+cluster://a:1, redis+cluster://b:2]`` -> ``redis+cluster://a:1,b:2``.

    Raises:
        ValueError: the list is empty, mixes schemes or credentials, or lists plain
            ``redis://`` URLs (one server has one address).
    """
    if not urls:
        raise ValueError("the broker list is empty")
    if len(urls) == 1:
        return urls[0]
    parsed = [parse_broker_url(u) for u in urls]
    if any(p.kind == "single" for p in parsed):
        raise ValueError("a list of broker URLs must be redis+cluster:// or "
                         "redis+sentinel:// seeds; a single server takes one redis:// URL")
    first = parsed[0]
    scheme = urls[0].split("://", 1)[0]
    for u, p in zip(urls, parsed, strict=True):
        same = (p.kind, p.username, p.password, p.tls, p.service, p.db, p.options) == (
            first.kind, first.username, first.password, first.tls, first.service, first.db,
            first.options)
        if not same:
            raise ValueError(f"{redact_url(u)!r} differs from {redact_url(urls[0])!r} in "
                             "scheme, credentials, service or options; list seeds of one "
                             "deployment")
    creds = urls[0].split("://", 1)[1].rpartition("@")[0]
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for a in parsed for h, p in a.hosts)
    tail = ""
    if first.kind == "sentinel":
        tail = f"/{first.service}" + (f"/{first.db}" if first.db else "")
    query = f"?{urllib.parse.urlencode(first.options)}" if first.options else ""
    return f"{scheme}://{creds + '@' if creds else ''}{hosts}{tail}{query}"

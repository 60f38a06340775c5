"""Benchmark data that looks like real logs, shared by ``bench/e2e.py`` and ``bench/processor.py``.

Workloads (``--data``):

- ``access`` (default): nginx "combined" lines of 150-250 bytes: IPv4 and IPv6 clients, a
  spread of paths (API ids, static assets, query strings), referers and real browser / bot
  user agents, ~3% lines the access regex does not match (nginx error-log lines), and a clock
  that advances so one second holds anywhere from 1 to a few hundred lines.
- ``backfill``: the same lines spread over 30 days: nearly every line has a new second.
- ``json``: JSON application logs (nested ``req``/``user``/``error`` maps, RFC 3339 ``ts``)
  written as CRI (containerd) files named like the kubelet's, parsed with a json parser.
- ``simple``: the shape before 2026-12 (``tailrace generate``: ~110-byte lines, one unique
  path each, every line within a few seconds), for continuity with older figures.

Each workload also names the parser the benchmarks configure for it (time_key, time_format,
types), so a run measures what a user's config would cost.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["WORKLOADS", "Workload", "lines", "write_files"]

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_START = 1_764_500_000.0  # 2025-11-30, a fixed origin so runs are comparable

#: The stock nginx pattern, with the types and time a user would configure.
ACCESS_PARSER = {
    "name": "access",
    "format": "regex",
    "regex": r'^(?<remote>[^ ]*) (?<host>[^ ]*) (?<user>[^ ]*) \[(?<time>[^\]]*)\] '
             r'"(?<method>\S+)(?: +(?<path>[^\"]*?)(?: +\S*)?)?" (?<code>[^ ]*) (?<size>[^ ]*)'
             r'(?: "(?<referer>[^\"]*)" "(?<agent>[^\"]*)")?$',
    "time_key": "time",
    "time_format": "%d/%b/%Y:%H:%M:%S %z",
    "types": {"code": "integer", "size": "integer"},
}
JSON_PARSER = {
    "name": "app_json",
    "format": "json",
    "time_key": "ts",
    "time_format": "%Y-%m-%dT%H:%M:%S.%L%z",
}

_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0", "kube-probe/1.31", "Go-http-client/2.0", "python-requests/2.32.3",
    "Prometheus/2.55.1", "okhttp/4.12.0",
]
_UA_WEIGHTS = [30, 12, 10, 8, 10, 4, 3, 2, 3, 2, 2, 2, 2]
_REFERERS = ["-", "-", "-", "https://www.google.com/", "https://shop.example.com/",
             "https://shop.example.com/cart", "https://www.bing.com/search?q=running+shoes",
             "https://t.co/x8Kq2LmZpa", "https://shop.example.com/products?page=2"]
_METHODS = ["GET"] * 14 + ["POST"] * 3 + ["PUT", "DELETE", "HEAD"]
_CODES = [200] * 30 + [201, 204, 206, 301, 302, 304, 304, 400, 401, 403, 404, 404, 429, 500,
                       502, 503]
_WORDS = ["shoes", "jackets", "running", "trail", "sale", "men", "women", "kids", "outdoor",
          "socks", "bags", "new", "gift-cards", "accessories"]


def _access_path(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:
        res = rng.choice(("users", "orders", "items", "carts", "sessions", "payments"))
        path = f"/api/v{rng.randint(1, 3)}/{res}/{rng.randrange(1, 10**7)}"
        if rng.random() < 0.3:
            path += f"/{rng.choice(('events', 'lines', 'history', 'status'))}"
        return path
    if r < 0.6:
        ext = rng.choice(("js", "css", "png", "jpg", "woff2", "svg", "webp"))
        return f"/static/{rng.choice(('js', 'css', 'img', 'fonts'))}/" \
               f"{rng.choice(_WORDS)}.{rng.getrandbits(32):08x}.{ext}"
    if r < 0.8:
        path = f"/products/{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{rng.randrange(1, 99999)}"
        if rng.random() < 0.4:
            path += f"?color={rng.choice(('red', 'blue', 'black'))}&size={rng.randint(36, 46)}"
        return path
    if r < 0.9:
        return f"/search?q={rng.choice(_WORDS)}+{rng.choice(_WORDS)}&page={rng.randint(1, 9)}"
    return rng.choice(("/healthz", "/metrics", "/", "/login", "/favicon.ico", "/robots.txt"))


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return f"2001:db8:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}"
    return f"{rng.randint(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"


def _clf(t: float) -> str:
    g = time.gmtime(t)
    return f"{g.tm_mday:02d}/{_MONTHS[g.tm_mon - 1]}/{g.tm_year}:{g.tm_hour:02d}:" \
           f"{g.tm_min:02d}:{g.tm_sec:02d} +0000"


def access_line(rng: random.Random, t: float) -> str:
    """One nginx access line at ``t``, or (~3%) an error-log line the regex does not match."""
    if rng.random() < 0.03:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(t))
        return (f"{stamp} [error] {rng.randint(7, 40)}#{rng.randint(0, 3)}: "
                f"*{rng.randrange(10**6)} "
                f"upstream timed out (110: Connection timed out) while reading response header "
                f"from upstream, client: {_ip(rng)}, server: shop.example.com")
    ua = rng.choices(_UAS, _UA_WEIGHTS)[0]
    return (f'{_ip(rng)} - - [{_clf(t)}] "{rng.choice(_METHODS)} {_access_path(rng)} HTTP/1.1" '
            f'{rng.choice(_CODES)} {rng.randrange(0, 60000)} "{rng.choice(_REFERERS)}" "{ua}"')


def _clock(rng: random.Random, n: int, backfill: bool) -> Iterator[float]:
    """``n`` times: 1 to a few hundred per second (``backfill``: over 30 days)."""
    t = _START
    if backfill:
        step = 30 * 86400 / n
        for _ in range(n):
            t += rng.expovariate(1 / step)
            yield t
        return
    left = 0
    for _ in range(n):
        if left == 0:
            # Lines per second: log-normal, median ~30, a tail to several hundred.
            left = max(1, min(400, int(rng.lognormvariate(3.4, 1.1))))
            t = math.floor(t) + 1 + (rng.random() < 0.2) * rng.randint(1, 5)
        left -= 1
        yield t + rng.random() * 0.999


_LEVELS = ["info"] * 12 + ["debug"] * 4 + ["warn"] * 2 + ["error"]
_LOGGERS = ["http.server", "orders.service", "payments.client", "db.pool", "cache", "auth"]
_MSGS = ["request completed", "order created", "payment authorised", "cache miss",
         "connection returned to pool", "token refreshed", "retrying upstream call"]


def app_json(rng: random.Random, t: float) -> str:
    """One JSON application log line (nested maps), ~250-450 bytes."""
    doc: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z",
        "level": rng.choice(_LEVELS),
        "logger": rng.choice(_LOGGERS),
        "msg": rng.choice(_MSGS),
        "trace_id": f"{rng.getrandbits(128):032x}",
        "req": {"method": rng.choice(_METHODS), "path": _access_path(rng),
                "status": rng.choice(_CODES), "duration_ms": round(rng.expovariate(1 / 40), 2),
                "remote": _ip(rng)},
        "user": {"id": rng.randrange(1, 10**6), "org": f"org-{rng.randrange(500)}",
                 "roles": rng.sample(["admin", "buyer", "seller", "support"], rng.randint(1, 2))},
    }
    if doc["level"] == "error":
        doc["error"] = {"type": "UpstreamTimeout", "message": "deadline exceeded after 3000ms",
                        "retries": rng.randint(0, 3)}
    return orjson.dumps(doc).decode()


class Workload:
    """A benchmark workload: how its lines look, its file format and parser."""

    def __init__(self, name: str, fmt: str, parser: dict[str, Any] | None, help: str) -> None:
        self.name, self.fmt, self.parser, self.help = name, fmt, parser, help

    @property
    def parser_name(self) -> str:
        return self.parser["name"] if self.parser else "nginx"


WORKLOADS = {
    "access": Workload("access", "plain", ACCESS_PARSER,
                       "nginx lines 150-250 B, v4/v6, ~3% unmatched, 1-400 lines a second"),
    "backfill": Workload("backfill", "plain", ACCESS_PARSER,
                         "the access lines spread over 30 days (a new second almost every line)"),
    "json": Workload("json", "cri", JSON_PARSER,
                     "JSON application logs with nested maps in CRI files, json parser on log"),
    "simple": Workload("simple", "plain", None,
                       "the old shape: tailrace generate's ~110 B lines, stock nginx parser"),
}


def lines(workload: str, n: int, seed: int = 7) -> Iterator[str]:
    """The ``n`` message texts of ``workload`` (``simple`` excluded: see write_files)."""
    rng = random.Random(seed)
    make = app_json if workload == "json" else access_line
    for t in _clock(rng, n, workload == "backfill"):
        yield make(rng, t)


def _cri_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def write_files(directory: Path, workload: str, n: int, files: int = 1) -> list[Path]:
    """Write ``n`` lines of ``workload`` round-robin into ``files`` ``.log`` files."""
    directory.mkdir(parents=True, exist_ok=True)
    if workload == "simple":
        from tailrace.generate import Generator

        gen = Generator(directory, files=files, fmt="plain", rate=0, total=n)
        gen.run(chunk=5000)
        gen.close()
        return sorted(directory.glob("*.log"))
    wl = WORKLOADS[workload]
    paths = [directory / (f"shop-{i}-7d9f8c6b5-x{i:04d}_prod_app-{i:08x}.log"
                          if wl.fmt == "cri" else f"access-{i}.log") for i in range(files)]
    outs = [open(p, "wb") for p in paths]  # noqa: SIM115 - closed below
    bufs: list[list[str]] = [[] for _ in paths]
    try:
        for i, text in enumerate(lines(workload, n)):
            k = i % files
            if wl.fmt == "cri":
                # The runtime's own stamp is the write time (close to the app's).
                text = f"{_cri_time(_START + i * 1e-4)} stdout F {text}"
            bufs[k].append(text)
            if len(bufs[k]) >= 5000:
                outs[k].write(("\n".join(bufs[k]) + "\n").encode())
                bufs[k].clear()
        for k, buf in enumerate(bufs):
            if buf:
                outs[k].write(("\n".join(buf) + "\n").encode())
    finally:
        for f in outs:
            f.close()
    return paths

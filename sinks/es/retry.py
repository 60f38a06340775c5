"""What a bulk answer means for each document: delivered, retry, or dead-letter.

The rules (Vector's ``ElasticsearchRetryLogic`` and Fluent Bit's ``elasticsearch_error_check``,
made per item):

- Whole request: 429 and 5xx are retried (all its documents); 413 splits the request in
  two; 401/403/404/407/408 are retried too but flagged as a *config* problem (a wrong
  password or URL must hold the data back, not dead-letter every record); any other 4xx
  rejects the request's documents with the reason.
- 2xx: every item on its own. 2xx is delivered; 409 on ``create`` means the document is
  already there (a redelivery): delivered; 429, 5xx and ``cluster_block_exception`` (a
  full disk blocks writes with 403 before Elasticsearch 7.7, 429 since) are retried; any
  other status (mapping errors, invalid index names, ...) rejects that document with its
  error type and reason.
- An answer that does not parse, or lists a different number of items than documents
  sent, retries the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .transport import BulkResponse

__all__ = ["CONFIG_STATUS", "Verdict", "describe_error", "judge"]

CONFIG_STATUS = {
    401: "authentication failed: check http_user/http_passwd or api_key",
    403: "not allowed: the user needs the create_doc (and create_index or auto_configure) "
         "privilege on the target index",
    404: "no bulk endpoint at this URL: check the host's path prefix",
    407: "the proxy wants authentication",
    408: "the request timed out at a proxy",
}
_RETRY_TYPES = frozenset({"cluster_block_exception"})
_MAX_REASON = 600


@dataclass(slots=True)
class Verdict:
    """The fate of each document of one request (positions index the request's records)."""

    delivered: int = 0
    conflicts: int = 0  # 409 on create: already indexed, counted in delivered
    retry: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    reason: str = ""  # first retry or request-level reason
    split: bool = False  # 413: send the documents in two halves
    config_problem: bool = False


def describe_error(error: Any, status: int) -> str:
    """``400 document_parsing_exception: failed to parse ... (caused by ...)``."""
    if not isinstance(error, dict):
        return f"{status} {str(error)[:_MAX_REASON]}" if error else f"HTTP {status}"
    text = f"{status} {error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict) and cause.get("reason"):
        text += f" (caused by {cause.get('type', 'error')}: {cause['reason']})"
    return text[:_MAX_REASON]


def _request_error(resp: BulkResponse) -> str:
    try:
        doc = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        snippet = resp.body[:200].decode("utf-8", "replace").strip()
        return f"HTTP {resp.status} from {resp.host}: {snippet or 'empty body'}"
    error = doc.get("error") if isinstance(doc, dict) else None
    return f"{describe_error(error, resp.status)} (from {resp.host})"


def judge(resp: BulkResponse, n_docs: int) -> Verdict:
    """Classify the answer to a bulk request of ``n_docs`` documents."""
    v = Verdict()
    status = resp.status
    if status == 413:
        v.split = True
        v.reason = f"HTTP 413 from {resp.host}: request larger than http.max_content_length"
        return v
    if status == 429 or status >= 500 or status in CONFIG_STATUS:
        v.retry = list(range(n_docs))
        v.reason = _request_error(resp)
        if status in CONFIG_STATUS:
            v.config_problem = True
            v.reason += f" -- {CONFIG_STATUS[status]}"
        return v
    if status >= 300:
        reason = _request_error(resp)
        v.rejected = [(i, reason) for i in range(n_docs)]
        return v
    try:
        doc = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        v.retry = list(range(n_docs))
        v.reason = f"unreadable bulk answer from {resp.host}"
        return v
    items = doc.get("items")
    if doc.get("errors") is False and (items is None or (
            isinstance(items, list) and len(items) == n_docs)):
        v.delivered = n_docs  # a clean answer: every item went in (no need to look at each)
        return v
    if not isinstance(items, list) or len(items) != n_docs:
        got = len(items) if isinstance(items, list) else "no"
        v.retry = list(range(n_docs))
        v.reason = f"bulk answer from {resp.host} lists {got} items for {n_docs} documents"
        return v
    for i, item in enumerate(items):
        result = next(iter(item.values()), None) if isinstance(item, dict) and item else None
        if not isinstance(result, dict):
            v.retry.append(i)
            v.reason = v.reason or f"item {i} of the bulk answer from {resp.host} is malformed"
            continue
        st = result.get("status", 0)
        if not isinstance(st, int):
            st = 0
        if 200 <= st < 300:
            v.delivered += 1
            continue
        error = result.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        if st == 409 and kind in (None, "version_conflict_engine_exception"):
            v.delivered += 1
            v.conflicts += 1
        elif st == 429 or st >= 500 or kind in _RETRY_TYPES or st == 0:
            v.retry.append(i)
            if not v.reason:
                v.reason = describe_error(error, st)
        else:
            v.rejected.append((i, describe_error(error, st)))
    return v

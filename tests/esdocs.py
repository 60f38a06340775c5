"""The document store behind ``tests/esserver.py``: bulk bodies, indices, dynamic mappings.

:func:`run_bulk` parses a bulk body as strictly as Elasticsearch (action and source pairs,
known actions and metadata only, an index for every action) and applies each action.

It answers each bulk item the way Elasticsearch does: ``create`` of an existing id is a 409
``version_conflict_engine_exception``; a value that does not fit the field's mapping (set
by the first document that had the field, or by ``PUT /index`` with mappings) is a 400
``document_parsing_exception`` (``mapper_parsing_exception`` before 8.0 and on OpenSearch);
a bad index name is a 400 ``invalid_index_name_exception``; data streams take only
``create`` and need ``@timestamp``. Not thread-safe: the server holds a lock around it.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from datetime import datetime
from typing import Any

import orjson

__all__ = ["DocStore", "run_bulk"]

_OPS = ("index", "create", "update", "delete")
_META = {"_index", "_id", "routing", "pipeline", "require_alias", "if_seq_no", "if_primary_term",
         "version", "version_type", "dynamic_templates", "retry_on_conflict", "_source",
         "require_data_stream", "list_executed_pipelines"}

_DATE_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_BAD_INDEX_CHARS = set('\\/*?"<>| ,#:')
_TOTAL_FIELDS_LIMIT = 1000


def _is_date(value: str) -> bool:
    """A date Elasticsearch's default format takes: the shape, and real calendar values.

    (Real servers refuse ``2024-13-45T99:00:00Z``; the shape alone let it through.)
    """
    if not _DATE_RE.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return False
    return True


def _preview(value: Any) -> str:
    """The field value as Java's toString shows it in a reason (``{y=1}``, not ``{'y': 1}``)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_preview(v)}" for k, v in value.items()) + "}"
    return str(value)


def _value_type(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "date" if _is_date(value) else "text"
    return "text"


# (python type, mapped kind) pairs that always fit: checked first, the common case.
_FITS_FAST = {(str, "text"), (str, "keyword"), (int, "long"), (int, "integer"),
              (float, "float"), (float, "double"), (int, "float"), (int, "double"),
              (bool, "boolean"), (dict, "object")}


def _fits(kind: str, value: Any) -> bool:
    """Whether ``value`` can be indexed into a field mapped as ``kind`` (with coercion)."""
    if value is None:
        return True
    if kind == "object":
        return isinstance(value, dict)
    if isinstance(value, dict):
        return False
    if kind in ("text", "keyword"):
        return True
    if kind in ("long", "integer"):
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return True
        try:
            float(value)
            return True
        except (TypeError, ValueError):
            return False
    if kind in ("float", "double"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        try:
            float(value)
            return True
        except (TypeError, ValueError):
            return False
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if kind == "date":
        return isinstance(value, (int, float)) or (isinstance(value, str) and _is_date(value))
    return True


class DocStore:
    """Indices of documents (source bytes by id) with dynamic mappings."""

    def __init__(self, *, major: int = 8, opensearch: bool = False,
                 data_streams: tuple[str, ...] = ("logs-*-*",)) -> None:
        self.major = major
        self.opensearch = opensearch
        self.data_streams = data_streams
        self.templates: dict[str, dict[str, Any]] = {}  # PUT /_index_template/{name}
        self.indices: dict[str, dict[str, bytes]] = {}
        self.mappings: dict[str, dict[str, str]] = {}
        self.created: Counter[str] = Counter()  # document id -> successful creations
        self.attempts: Counter[str] = Counter()  # document id -> items received
        self.statuses: Counter[int] = Counter()
        self._seq = 0
        self._index_facts: dict[str, tuple[str | None, bool]] = {}  # name problem, stream

    @property
    def _at(self) -> str:
        # Elasticsearch 8 starts a parsing reason with the position ([line:column]; the
        # column is not modelled), OpenSearch does not.
        return "" if self.opensearch or self.major < 8 else "[1:2] "

    @property
    def parsing_error(self) -> str:
        if self.opensearch or self.major < 8:
            return "mapper_parsing_exception"
        return "document_parsing_exception"

    def is_data_stream(self, index: str) -> bool:
        if any(fnmatch.fnmatchcase(index, p) for p in self.data_streams):
            return True
        tpl = self._template(index)
        return tpl is not None and "data_stream" in tpl

    def put_template(self, name: str, body: dict[str, Any]) -> None:
        """A composable index template: its patterns, ``data_stream``, mappings."""
        self.templates[name] = body
        self._index_facts.clear()

    def _template(self, index: str) -> dict[str, Any] | None:
        """The matching template of highest priority, as the real servers pick it."""
        matching = [t for t in self.templates.values()
                    if any(fnmatch.fnmatchcase(index, p) for p in t.get("index_patterns", []))]
        return max(matching, key=lambda t: t.get("priority", 0)) if matching else None

    def put_mapping(self, index: str, properties: dict[str, Any], prefix: str = "") -> None:
        mapping = self.mappings.setdefault(index, {})
        self.indices.setdefault(index, {})
        for name, spec in properties.items():
            path = prefix + name
            if "properties" in spec:
                mapping[path] = "object"
                self.put_mapping(index, spec["properties"], path + ".")
            else:
                mapping[path] = str(spec.get("type", "text"))

    def count(self, pattern: str = "*") -> int:
        pats = pattern.split(",")
        return sum(len(docs) for name, docs in self.indices.items()
                   if any(fnmatch.fnmatchcase(name, p) for p in pats))

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        src = self.indices.get(index, {}).get(doc_id)
        return None if src is None else orjson.loads(src)  # type: ignore[no-any-return]

    def ids(self) -> Counter[str]:
        """How many indices hold each document id (1 everywhere = no duplicate)."""
        out: Counter[str] = Counter()
        for docs in self.indices.values():
            out.update(docs.keys())
        return out

    def delete(self, pattern: str) -> int:
        gone = [n for n in self.indices if fnmatch.fnmatchcase(n, pattern)]
        for name in gone:
            self.indices.pop(name, None)
            self.mappings.pop(name, None)
        return len(gone)

    # -- one bulk item --------------------------------------------------------------------
    def _error(self, op: str, index: str, doc_id: str | None, status: int, kind: str,
               reason: str, caused_by: str | None = None) -> dict[str, Any]:
        self.statuses[status] += 1
        error: dict[str, Any] = {"type": kind, "reason": reason}
        # As the real servers answer (ES 8.19, OpenSearch 2.19 and 3.6): a parsing error
        # names no index or shard, an invalid name has index_uuid "_na_", shard errors
        # (409, 429) carry all three.
        if kind == "invalid_index_name_exception":
            error.update(index=index, index_uuid="_na_")
        elif status != 400:
            error.update(index=index, shard="0", index_uuid="tailrace-test-uuid")
        if caused_by is not None:
            error["caused_by"] = {"type": "illegal_argument_exception", "reason": caused_by}
        body: dict[str, Any] = {"_index": index, "_id": doc_id, "status": status,
                                "error": error}
        if self.major < 8 and not self.opensearch:
            body["_type"] = "_doc"
        return {op: body}

    def _index_name_problem(self, index: str) -> str | None:
        if index != index.lower():
            return f"Invalid index name [{index}], must be lowercase"
        if index[:1] in ("_", "-", "+") or index in (".", ".."):
            return f"Invalid index name [{index}], must not start with '_', '-', or '+'"
        bad = sorted(set(index) & _BAD_INDEX_CHARS)
        if bad:
            return f"Invalid index name [{index}], must not contain the following characters {bad}"
        if len(index.encode()) > 255:
            return f"Invalid index name [{index}], index name is too long"
        return None

    def _map(self, index: str, doc: dict[str, Any], doc_id: str, mapping: dict[str, str],
             new: dict[str, str], prefix: str = "") -> str | None:
        fast = _FITS_FAST
        for key, value in doc.items():
            path = prefix + key if prefix else key
            for v in value if isinstance(value, list) else (value,):
                kind = mapping.get(path) or new.get(path)
                if kind is None:
                    kind = _value_type(v)
                    if kind is None:
                        continue
                    new[path] = kind
                elif (type(v), kind) not in fast and not _fits(kind, v):
                    if kind == "object":
                        return (f"{self._at}object mapping for [{path}] tried to parse field "
                                f"[{path}] as object, but found a concrete value")
                    preview = _preview(v)[:20]
                    return (f"{self._at}failed to parse field [{path}] of type [{kind}] in "
                            f"document with id '{doc_id}'. Preview of field's value: '{preview}'")
                if type(v) is dict:
                    problem = self._map(index, v, doc_id, mapping, new, path + ".")
                    if problem:
                        return problem
        return None

    def apply(self, op: str, meta: dict[str, Any], source: bytes | None) -> dict[str, Any]:
        """Apply one action; returns its item of the bulk answer."""
        index = str(meta.get("_index", ""))
        doc_id = meta.get("_id")
        if doc_id is not None:
            doc_id = str(doc_id)
            self.attempts[doc_id] += 1
        facts = self._index_facts.get(index)
        if facts is None:
            facts = self._index_facts[index] = (self._index_name_problem(index),
                                                self.is_data_stream(index))
        problem, stream = facts
        if problem:
            return self._error(op, index, doc_id, 400, "invalid_index_name_exception", problem)
        if stream and op != "create":
            return self._error(op, index, doc_id, 400, "illegal_argument_exception",
                               f"only write ops with an op_type of create are allowed in data "
                               f"streams (index [{index}])")
        if op == "delete":
            docs = self.indices.get(index, {})
            if doc_id is None or docs.pop(doc_id, None) is None:
                return {op: {"_index": index, "_id": doc_id, "result": "not_found",
                             "status": 404}}
            return {op: {"_index": index, "_id": doc_id, "result": "deleted", "status": 200}}
        try:
            doc = orjson.loads(source or b"")
        except orjson.JSONDecodeError as exc:
            return self._error(op, index, doc_id, 400, self.parsing_error,
                               f"failed to parse: {exc}")
        if not isinstance(doc, dict):
            return self._error(op, index, doc_id, 400, self.parsing_error,
                               "failed to parse: source must be an object")
        if op == "update":
            doc = doc.get("doc", {})
        docs = self.indices.setdefault(index, {})
        if doc_id is None:
            self._seq += 1
            doc_id = f"auto-{self._seq}"
        if op == "create" and doc_id in docs:
            return self._error(op, index, doc_id, 409, "version_conflict_engine_exception",
                               f"[{doc_id}]: version conflict, document already exists "
                               "(current version [1])")
        if stream and "@timestamp" not in doc:
            if self.opensearch:
                return self._error(op, index, doc_id, 400, self.parsing_error,
                                   "failed to parse", "documents must contain a single-valued "
                                   "timestamp field '@timestamp' of date type")
            return self._error(op, index, doc_id, 400, self.parsing_error,
                               "[1:2] failed to parse: data stream timestamp field "
                               "[@timestamp] is missing",
                               "data stream timestamp field [@timestamp] is missing")
        if index not in self.mappings:
            tpl = self._template(index)
            props = (tpl or {}).get("template", {}).get("mappings", {}).get("properties")
            if props:
                self.put_mapping(index, props)
        mapping = self.mappings.setdefault(index, {})
        new: dict[str, str] = {}
        problem = self._map(index, doc, doc_id, mapping, new)
        if problem:
            kind = self.parsing_error if "failed to parse" in problem else (
                self.parsing_error if self.major >= 8 else "mapper_parsing_exception")
            # The real answer adds the value's own complaint; its wording is not modelled.
            cause = "failed to parse the value" if "failed to parse field" in problem else None
            return self._error(op, index, doc_id, 400, kind, problem, cause)
        if len(mapping) + len(new) > _TOTAL_FIELDS_LIMIT:
            return self._error(op, index, doc_id, 400, "illegal_argument_exception",
                               f"Limit of total fields [{_TOTAL_FIELDS_LIMIT}] has been "
                               "exceeded while adding new fields")
        mapping.update(new)
        existed = doc_id in docs
        docs[doc_id] = source if op != "update" else orjson.dumps(doc)
        self._seq += 1
        status = 200 if existed else 201
        self.statuses[status] += 1
        if op == "create":
            self.created[doc_id] += 1
        body: dict[str, Any] = {"_index": index, "_id": doc_id, "_version": 1,
                                "result": "updated" if existed else "created",
                                "_shards": {"total": 1, "successful": 1, "failed": 0},
                                "_seq_no": self._seq, "_primary_term": 1, "status": status}
        if self.major < 8 and not self.opensearch:
            body["_type"] = "_doc"
        return {op: body}


def run_bulk(store: DocStore, body: bytes, default_index: str | None, item_faults: list[Any],
             *, allow_type: bool = False) -> list[dict[str, Any]] | tuple[str, str]:
    """The items of a bulk body, or (type, reason) when the body is malformed (a 400).

    ``item_faults`` are :class:`esparts.Fault` objects that answer matching items instead.
    """
    lines = body.split(b"\n")[:-1]
    items: list[dict[str, Any]] = []
    allowed = _META | ({"_type"} if allow_type else set())
    loads, apply = orjson.loads, store.apply
    i = 0
    while i < len(lines):
        raw = lines[i].rstrip(b"\r")
        try:
            action = loads(raw)
        except orjson.JSONDecodeError:
            return ("illegal_argument_exception",
                    f"Malformed action/metadata line [{i + 1}], expected START_OBJECT but "
                    f"found [{raw[:20].decode('utf-8', 'replace')}]")
        if not isinstance(action, dict) or len(action) != 1:
            return ("illegal_argument_exception",
                    f"Malformed action/metadata line [{i + 1}], expected a simple object "
                    "with one action")
        op, meta = next(iter(action.items()))
        if op not in _OPS:
            return ("illegal_argument_exception",
                    f"Malformed action/metadata line [{i + 1}], expected field [create], "
                    f"[delete], [index] or [update] but found [{op}]")
        if not isinstance(meta, dict):
            return ("illegal_argument_exception",
                    f"Malformed action/metadata line [{i + 1}], expected START_OBJECT")
        for key in meta:
            if key not in allowed:
                return ("illegal_argument_exception",
                        f"Action/metadata line [{i + 1}] contains an unknown parameter "
                        f"[{key}]")
        if "_index" not in meta:
            if default_index is None:
                return ("action_request_validation_exception",
                        "Validation Failed: 1: index is missing;")
            meta = {**meta, "_index": default_index}
        source = None
        if op != "delete":
            if i + 1 >= len(lines):
                return ("illegal_argument_exception",
                        f"The bulk request must be terminated by a newline [\\n] (action "
                        f"on line [{i + 1}] has no source)")
            source = lines[i + 1].rstrip(b"\r")
            i += 2
        else:
            i += 1
        doc_id = meta.get("_id")
        fault = None
        if item_faults:
            fault = next((f for f in item_faults if f.take_item(
                None if doc_id is None else str(doc_id), len(items))), None)
        if fault is not None:
            assert fault.item_status is not None
            if doc_id is not None:
                store.attempts[str(doc_id)] += 1
            kind = fault.error_type or ("es_rejected_execution_exception"
                                        if fault.item_status == 429 else "exception")
            items.append(store._error(op, str(meta["_index"]), doc_id,
                                           fault.item_status, kind, fault.reason))
            continue
        items.append(apply(op, meta, source))
    return items

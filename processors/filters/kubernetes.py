"""The ``kubernetes`` filter: pod metadata into the record, under Fluent Bit's names.

The agent already knows pod, namespace, container and container id from the log file's
name (``kubernetes.{pod,namespace,container,container_id}`` in the batch meta); without
them the tag is read the way Fluent Bit does (``kube_tag_prefix`` + ``POD_NS_CONTAINER-ID.log``).
The filter writes Fluent Bit's record shape, so dashboards and mappings carry over::

    kubernetes: {pod_name, namespace_name, container_name, docker_id,
                 pod_id, host, labels, annotations, container_image}

The last five come from an optional pod-metadata file (``kube_meta_file``): the output of
``kubectl get pods -A -o json`` (or YAML), or a map ``"namespace/pod": {labels, annotations,
pod_id, host, container_image}``. It is re-read when it changes (checked at most every
``kube_meta_refresh_s``); there is no API-server client. Pod annotations work as in Fluent
Bit: ``fluentbit.io/exclude: "true"`` drops the pod's records (``k8s_logging_exclude``),
``fluentbit.io/parser: NAME`` picks the parser for ``merge_log`` (``k8s_logging_parser``).
``merge_log`` parses ``log`` (JSON, or ``merge_parser``) into the record or under
``merge_log_key``; a log that does not parse is left untouched.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson
import yaml
from pydantic import AliasChoices, Field, model_validator

from tailrace.config import Config
from tailrace.logs import RateLimiter, event
from tailrace.options import FilterOptions, Problem
from tailrace.outcome import FilterResult
from tailrace.plugins import FilterPlugin, Record

from ..context import FilterContext
from ..parsers.base import BoundParser, ParseFailure
from ..stock import STOCK_PARSERS
from ._fluent import fold_keys

__all__ = ["KubernetesFilter", "KubernetesOptions", "load_pod_metadata"]

log = logging.getLogger(__name__)
_TAG_RE = re.compile(r"^(?P<pod>[^_]+)_(?P<namespace>[^_]+)_(?P<container>.+)-"
                     r"(?P<container_id>[0-9a-f]{64})\.log$")
_TRUE = ("true", "on", "yes", "1")


class KubernetesOptions(FilterOptions):
    kube_tag_prefix: str = Field(
        "kube.var.log.containers.", description="Tag prefix before `POD_NS_CONTAINER-ID.log`."
    )
    kube_meta_file: str | None = Field(
        None, description="Pod metadata: `kubectl get pods -A -o json` output, or a map "
        "`namespace/pod: {labels, annotations, ...}` (JSON or YAML; relative to the config)."
    )
    kube_meta_refresh_s: float = Field(
        5.0, ge=0, description="How often to check the metadata file for changes."
    )
    labels: bool = Field(True, description="Add the pod's labels.")
    annotations: bool = Field(True, description="Add the pod's annotations.")
    merge_log: bool = Field(False, description="Parse `log` and merge its fields.")
    merge_log_key: str | None = Field(None, description="Merge parsed fields under this key.")
    merge_log_trim: bool = Field(True, description="Trim whitespace of merged string values.")
    merge_parser: str | None = Field(None, description="Parser for `merge_log` (default JSON).")
    keep_log: bool = Field(True, description="Keep `log` after merging it.")
    k8s_logging_parser: bool = Field(
        False, validation_alias=AliasChoices("k8s_logging_parser", "k8s-logging.parser"),
        description="Let pods pick the `merge_log` parser (annotation `fluentbit.io/parser`).",
    )
    k8s_logging_exclude: bool = Field(
        False, validation_alias=AliasChoices("k8s_logging_exclude", "k8s-logging.exclude"),
        description="Let pods exclude their logs (annotation `fluentbit.io/exclude: \"true\"`).",
    )

    @model_validator(mode="before")
    @classmethod
    def _fold(cls, data: Any) -> Any:
        return fold_keys(cls, data)

    def check_config(self, config: Config) -> list[Problem]:
        known = set(config.parsers) | {p["name"] for p in STOCK_PARSERS}
        if self.merge_parser and self.merge_parser not in known:
            return [(("merge_parser",), f"unknown parser {self.merge_parser!r}")]
        return []


def load_pod_metadata(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, pod) -> {pod_id, host, labels, annotations, images: {container: image}}.

    Raises:
        ValueError: the file is not JSON/YAML of a supported shape.
    """
    raw = path.read_bytes()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            doc = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: neither JSON nor YAML: {exc}") from None
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        for pod in doc["items"]:
            md = pod.get("metadata") or {}
            spec = pod.get("spec") or {}
            out[(str(md.get("namespace", "default")), str(md.get("name", "")))] = {
                "pod_id": md.get("uid"), "host": spec.get("nodeName"),
                "labels": md.get("labels") or {}, "annotations": md.get("annotations") or {},
                "images": {c.get("name"): c.get("image") for c in spec.get("containers") or []},
            }
    elif isinstance(doc, dict):
        for key, meta in doc.items():
            ns, sep, pod = str(key).partition("/")
            if not sep or not isinstance(meta, dict):
                raise ValueError(f"{path}: expected keys 'namespace/pod' with maps, got {key!r}")
            out[(ns, pod)] = {**meta, "labels": meta.get("labels") or {},
                              "annotations": meta.get("annotations") or {},
                              "images": meta.get("images") or {}}
    else:
        raise ValueError(f"{path}: expected `kubectl get pods -o json` output or a map of "
                         "'namespace/pod' to metadata")
    return out


class KubernetesFilter(FilterPlugin):
    name: ClassVar[str] = "kubernetes"
    description: ClassVar[str] = "Add Kubernetes pod metadata (names, labels, annotations)."
    Options: ClassVar[type[KubernetesOptions]] = KubernetesOptions

    def __init__(self, options: KubernetesOptions, ctx: FilterContext) -> None:
        self.o = options
        self.parsers = ctx.parsers
        self.merge_parser: BoundParser | None = (
            ctx.parsers[options.merge_parser] if options.merge_parser else None)
        self.path = ctx.base_dir / options.kube_meta_file if options.kube_meta_file else None
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.counters = ctx.counters
        self._mtime = 0.0
        self._next_check = 0.0
        self._limiter = RateLimiter()
        self._cache: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.path is None or now < self._next_check:
            return
        self._next_check = now + self.o.kube_meta_refresh_s
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            self.pods = load_pod_metadata(self.path)
            self._mtime = mtime
            self._cache.clear()
        except (OSError, ValueError) as exc:
            if self._limiter.allow("load"):
                event(log, logging.ERROR, "kubernetes_meta_load_error",
                      f"cannot load pod metadata {self.path}: {exc}; keeping the last good "
                      "copy", path=str(self.path))

    def _identity(self, r: Record) -> tuple[str, str, str, str] | None:
        k = r.get("kubernetes")
        if isinstance(k, dict) and "pod" in k and "namespace" in k:
            return (str(k["namespace"]), str(k["pod"]), str(k.get("container", "")),
                    str(k.get("container_id", "")))
        tag = str(r.get("_tag", ""))
        prefix = self.o.kube_tag_prefix
        if tag.startswith(prefix):
            m = _TAG_RE.match(tag[len(prefix):])
            if m:
                return m["namespace"], m["pod"], m["container"], m["container_id"]
        return None

    def _meta(self, ident: tuple[str, str, str, str]) -> dict[str, Any]:
        meta = self._cache.get(ident)
        if meta is not None:
            return meta
        ns, pod, container, cid = ident
        meta = {"pod_name": pod, "namespace_name": ns, "container_name": container}
        if cid:
            meta["docker_id"] = cid
        info = self.pods.get((ns, pod))
        if info is not None:
            for key in ("pod_id", "host"):
                if info.get(key):
                    meta[key] = info[key]
            if self.o.labels and info["labels"]:
                meta["labels"] = info["labels"]
            if self.o.annotations and info["annotations"]:
                meta["annotations"] = info["annotations"]
            image = info["images"].get(container)
            if image:
                meta["container_image"] = image
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[ident] = meta
        return meta

    def _annotation(self, ident: tuple[str, str, str, str], name: str,
                    stream: Any) -> str | None:
        info = self.pods.get((ident[0], ident[1]))
        if info is None:
            return None
        ann = info["annotations"]
        base = f"fluentbit.io/{name}"
        for key in (f"{base}_{stream}-{ident[2]}", f"{base}-{ident[2]}", f"{base}_{stream}",
                    base):
            if key in ann:
                return str(ann[key])
        return None

    def process(self, records: list[Record]) -> FilterResult:
        self._refresh()
        o = self.o
        out: list[Record] = []
        for r in records:
            ident = self._identity(r)
            if ident is None:
                out.append(r)
                continue
            stream = r.get("stream")
            if o.k8s_logging_exclude and (self._annotation(ident, "exclude", stream) or ""
                                          ).lower() in _TRUE:
                self.counters["excluded"] += 1
                continue
            meta = self._meta(ident)
            k = dict(meta)
            for sub in ("labels", "annotations"):
                if sub in k:
                    k[sub] = dict(k[sub])
            r["kubernetes"] = k
            if o.merge_log:
                self._merge(r, ident, stream)
            out.append(r)
        return FilterResult(out)

    def _merge(self, r: Record, ident: tuple[str, str, str, str], stream: Any) -> None:
        text = r.get("log")
        if not isinstance(text, str):
            return
        parser = None
        if self.o.k8s_logging_parser:
            name = self._annotation(ident, "parser", stream)
            parser = self.parsers.get(name) if name else None
        parser = parser or self.merge_parser
        if parser is not None:
            errors = parser.time_errors
            try:
                fields, t = parser.parse(text)
            except ParseFailure:
                self.counters["merge_failures"] += 1
                return
            if t is not None:
                r["time"] = t
            elif parser.time_errors != errors:
                self.counters["time_errors"] += 1  # merged, flagged, with the read time
        else:
            try:
                fields = orjson.loads(text)
            except orjson.JSONDecodeError:
                self.counters["merge_failures"] += 1
                return
            if not isinstance(fields, dict):
                return
        if self.o.merge_log_trim:
            fields = {k: v.strip() if isinstance(v, str) else v for k, v in fields.items()}
        if self.o.merge_log_key:
            r[self.o.merge_log_key] = fields
        else:
            for key, v in fields.items():
                if key not in ("_id", "_tag"):
                    r[key] = v
        if not self.o.keep_log:
            del r["log"]

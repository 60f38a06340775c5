"""Finding the files an input follows: globs, ``path_regex``, exclusions, selectors, metadata.

Discovery only names files (with their ``stat``); it never opens them. Each path's
description (tag, metadata, whether the selectors keep it) is computed once and cached
until the path disappears, so a re-scan of 1,000 files costs a glob and a ``stat`` each.
Kubernetes metadata comes from the kubelet's file names:

- ``/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`` (symlinks), and
- ``/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log`` (their targets).
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tailrace.logs import event

from .options import K8S_FIELDS, Selector, TailOptions, fluent_regex

__all__ = ["Description", "Discovery", "kubernetes_meta"]

log = logging.getLogger(__name__)

MAX_WALK_ENTRIES = 200_000
_CONTAINERS_RE = re.compile(
    r"(?P<pod>[^_/]+)_(?P<namespace>[^_/]+)_(?P<container>.+)-(?P<container_id>[0-9a-f]{64})"
    r"\.log$"
)
_PODS_RE = re.compile(
    r"/pods/(?P<namespace>[^_/]+)_(?P<pod>[^_/]+)_(?P<pod_id>[^_/]+)/(?P<container>[^/]+)/"
    r"[^/]+$"
)
_TAG_FIELD_RE = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")
_REGEX_SPECIAL = set("\\.^$*+?()[]{}|")


def kubernetes_meta(path: str) -> dict[str, str]:
    """Pod, namespace, container (and container id or pod uid) named by a kubelet path."""
    found: dict[str, str] = {}
    m = _CONTAINERS_RE.search(os.path.basename(path))
    if m:
        found.update(m.groupdict())
    m = _PODS_RE.search(path)
    if m:
        for k, v in m.groupdict().items():
            found.setdefault(k, v)
    return found


@dataclass(frozen=True, slots=True)
class Description:
    """What discovery knows about one path."""

    selected: bool
    tag: str
    meta: dict[str, str]  # record metadata: host, kubernetes.<field>, path_regex groups


def _regex_root(pattern: str, base_dir: Path) -> str:
    """The folder a ``path_regex`` can only match below: its literal prefix's folder."""
    src = pattern[1:] if pattern.startswith("^") else pattern
    literal = []
    i = 0
    while i < len(src):
        c = src[i]
        if c == "\\" and i + 1 < len(src) and not src[i + 1].isalnum():
            literal.append(src[i + 1])
            i += 2
            continue
        if c in _REGEX_SPECIAL:
            break
        literal.append(c)
        i += 1
    prefix = "".join(literal)
    root = prefix if prefix.endswith("/") else os.path.dirname(prefix)
    if not root:
        return str(base_dir)
    return os.path.normpath(root if os.path.isabs(root) else str(base_dir / root))


def _glob_match(path: str, pattern: str) -> bool:
    """``glob`` semantics for one path: ``*`` and ``?`` never cross a ``/``."""
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(
        fnmatch.fnmatchcase(part, pat) for part, pat in zip(parts, pats, strict=True))


class Discovery:
    """The files one ``tail`` input follows, found by globs and/or ``path_regex``."""

    def __init__(self, opts: TailOptions, *, base_dir: Path, host: str, input_id: str,
                 plugin_name: str) -> None:
        self.opts = opts
        self.host = host
        self.input_id = input_id
        self.patterns = [os.path.expanduser(p) for p in opts.path]
        self.patterns = [p if os.path.isabs(p) else str(base_dir / p) for p in self.patterns]
        self.regex = re.compile(fluent_regex(opts.path_regex)) if opts.path_regex else None
        self.walk_root = (_regex_root(opts.path_regex, base_dir)
                          if opts.path_regex and not opts.path else None)
        self.tag_template = opts.tag or opts.alias or plugin_name
        self.selectors: list[tuple[str, Selector]] = [
            (name, sel) for name, sel in (("namespace", opts.namespaces), ("pod", opts.pods),
                                          ("container", opts.containers)) if sel.restricts
        ]
        self._cache: dict[str, Description] = {}
        self._walk_warned = False

    # -- scanning ---------------------------------------------------------------------------
    def scan(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every selected regular file now matching (path as matched, stat of its target).

        Symlinks are followed (Kubernetes links ``/var/log/containers`` into
        ``/var/log/pods``); each path is yielded once.
        """
        seen: set[str] = set()
        for path in self._candidates():
            if path in seen:
                continue
            seen.add(path)
            if self._excluded(path):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            if self.describe(path).selected:
                yield path, st
        for gone in [p for p in self._cache if p not in seen]:
            del self._cache[gone]

    def follows(self, path: str) -> bool:
        """Whether this input would follow ``path`` (globs, ``path_regex``, exclusions,
        selectors), whether or not it exists: which input a checkpointed file was read by."""
        if self.regex is not None and not self.regex.search(path):
            return False
        if self.patterns and not any(_glob_match(path, p) for p in self.patterns):
            return False
        if self._excluded(path):
            return False
        return self._selected(kubernetes_meta(path)) if self.selectors else True

    def _candidates(self) -> Iterator[str]:
        for pattern in self.patterns:
            for path in glob.iglob(pattern):
                if self.regex is None or self.regex.search(path):
                    yield path
        if self.walk_root is not None and self.regex is not None:
            yield from self._walk(self.walk_root, self.regex)

    def _walk(self, root: str, regex: re.Pattern[str]) -> Iterator[str]:
        n = 0
        for folder, dirs, files in os.walk(root, followlinks=False):
            n += len(dirs) + len(files)
            if n > MAX_WALK_ENTRIES:
                if not self._walk_warned:
                    self._walk_warned = True
                    event(log, logging.WARNING, "tail_walk_truncated",
                          f"path_regex walk of {root} passed {MAX_WALK_ENTRIES} entries; "
                          "files beyond are not seen: add a `path` glob to narrow it",
                          input=self.input_id)
                return
            for name in files:
                path = os.path.join(folder, name)
                if regex.search(path):
                    yield path

    def _excluded(self, path: str) -> bool:
        if not self.opts.exclude_path:
            return False
        name = os.path.basename(path)
        return any(fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(name, pat)
                   for pat in self.opts.exclude_path)

    # -- describing ---------------------------------------------------------------------------
    def describe(self, path: str) -> Description:
        """Tag, metadata and selection of ``path`` (cached while the path exists)."""
        d = self._cache.get(path)
        if d is None:
            d = self._cache[path] = self._describe(path)
        return d

    def _describe(self, path: str) -> Description:
        fields = kubernetes_meta(path)
        if not fields or "pod_id" not in fields:
            try:
                target = os.path.realpath(path)
            except OSError:
                target = path
            if target != path:
                for k, v in kubernetes_meta(target).items():
                    fields.setdefault(k, v)
        extra: dict[str, str] = {}
        if self.regex is not None:
            m = self.regex.search(path)
            if m:
                for k, v in m.groupdict().items():
                    if v is None:
                        continue
                    if k in K8S_FIELDS:
                        fields[k] = v
                    else:
                        extra[k] = v
        meta = {"host": self.host}
        for k in K8S_FIELDS:
            if k in fields:
                meta[f"kubernetes.{k}"] = fields[k]
        meta.update(extra)
        return Description(self._selected(fields), self._tag(path, fields, extra), meta)

    def _selected(self, fields: dict[str, str]) -> bool:
        for name, sel in self.selectors:
            value = fields.get(name)
            if value is None:
                if sel.include != ["*"]:
                    return False  # an operator who lists what to tail wants only that
                continue
            if not any(fnmatch.fnmatchcase(value, g) for g in sel.include):
                return False
            if any(fnmatch.fnmatchcase(value, g) for g in sel.exclude):
                return False
        return True

    def _tag(self, path: str, fields: dict[str, str], extra: dict[str, str]) -> str:
        tag = self.tag_template
        if "*" in tag:
            tag = tag.replace("*", path.replace("/", ".").strip("."))
        if "<" in tag:
            tag = _TAG_FIELD_RE.sub(lambda m: extra.get(m[1], fields.get(m[1], "")), tag)
        return tag

    # -- folders to watch -------------------------------------------------------------------------
    def watch_dirs(self) -> set[str]:
        """Folders whose changes may add or remove files of this input (for inotify)."""
        dirs: set[str] = set()
        for pattern in self.patterns:
            parent = os.path.dirname(pattern)
            if glob.has_magic(parent):
                dirs.update(d for d in glob.iglob(parent) if os.path.isdir(d))
            elif os.path.isdir(parent):
                dirs.add(parent)
        if self.walk_root is not None and os.path.isdir(self.walk_root):
            dirs.add(self.walk_root)
            for folder, _dirs, _files in os.walk(self.walk_root):
                dirs.add(folder)
                if len(dirs) > 1024:
                    break
        return dirs

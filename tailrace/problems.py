"""Config problems, collected: pydantic's validation errors turned into
``FILE:LINE:COL: key.path: what was expected, what was found``, every one of a file at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigProblem
from .redaction import MASK, MIN_SCRUB_LEN, mask_secrets, scrub, secret_field
from .yamlmarks import Marks, path_str

__all__ = ["ProblemCollector", "show", "validate"]


class ProblemCollector:
    """Gathers every problem of one config file, each placed at its line and column."""

    def __init__(self, filename: str, marks: Marks) -> None:
        self.filename = filename
        self.marks = marks
        self.problems: list[ConfigProblem] = []

    def mark(self, path: tuple[str | int, ...]) -> tuple[int, int]:
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), (0, 0))

    def add(self, path: tuple[str | int, ...], message: str, *, at_key: bool = False) -> None:
        key_path = (*path, "<key>")
        line, col = self.marks[key_path] if at_key and key_path in self.marks else self.mark(path)
        self.problems.append(ConfigProblem(self.filename, line, col, path_str(path), message))

    def pydantic(self, prefix: tuple[str | int, ...], exc: ValidationError, model: Any) -> None:
        seen: set[str] = set()
        for err in exc.errors(include_url=False):
            # Drop loc parts that are pydantic's own (union member names), keep data paths.
            path: tuple[str | int, ...] = prefix
            loc = list(err["loc"])
            for i, part in enumerate(loc):
                cand = (*path, part)
                if cand in self.marks or i == len(loc) - 1 or isinstance(part, int):
                    if isinstance(part, (str, int)):
                        path = cand
            kind = err["type"]
            if kind == "extra_forbidden":
                allowed = _field_names(model, list(err["loc"])[:-1])
                msg = f"unknown key {path[-1]!r}"
                if allowed:
                    msg += f"; expected one of: {', '.join(allowed)}"
                self.add(path, msg, at_key=True)
                continue
            if kind == "missing":
                msg = f"required key {path[-1]!r} is missing"
            else:
                msg = _message(err, model)
            text = path_str(path)
            if text in seen:
                continue
            seen.add(text)
            self.add(path, msg)


# Our own validators' messages (``raise ValueError(...)``) say what was wrong and quote
# what matters; pydantic's prefix adds nothing and the input (for a cross-field check the
# whole entry, secrets included) is not repeated.
_OWN_MESSAGE = {"value_error": "Value error, ", "assertion_error": "Assertion failed, "}


def _message(err: Any, model: Any) -> str:
    kind = err["type"]
    text = str(err["msg"])
    value = err.get("input")
    sub = _secret_loc(model, list(err["loc"]))
    if kind in _OWN_MESSAGE:
        # A validator may quote a value: never a secret one (nor a URL's password).
        text = scrub(text.removeprefix(_OWN_MESSAGE[kind]))
        for secret in _secrets_in(value, None if sub is True else sub, sub is True):
            if len(secret) >= MIN_SCRUB_LEN:  # shorter ones would mask ordinary words
                text = text.replace(secret, MASK)
        return _lower_first(text)
    if sub is True:
        name = type(value).__name__
        article = "an" if name[:1] in "aeiou" else "a"
        return f"{_lower_first(text)}, got {article} {name} (not shown: a secret option)"
    return f"{_lower_first(text)}, got {show(mask_secrets(value, sub))}"


def _secrets_in(value: Any, model: Any, secret: bool) -> list[str]:
    """The string values of secret options in config input ``value``."""
    if isinstance(value, str):
        return [value] if secret and value else []
    if isinstance(value, dict):
        return [s for k, v in value.items()
                for s in _secrets_in(v, None, secret or (isinstance(k, str)
                                                         and secret_field(model, k)))]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _secrets_in(v, model, secret)]
    return []


def _secret_loc(model: Any, loc: Sequence[Any]) -> Any:
    """True when ``loc`` names a secret option, else the model class the input belongs to."""
    cls = model
    for part in loc:
        if not isinstance(part, str):
            continue
        if secret_field(cls, part):
            return True
        fields = getattr(cls, "model_fields", None) or {}
        f = fields.get(part)
        if f is not None:
            ann = f.annotation
            nested = [a for a in (ann, *getattr(ann, "__args__", ()))
                      if isinstance(a, type) and issubclass(a, BaseModel)]
            cls = nested[0] if nested else None
    return cls


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def show(value: Any) -> str:
    """A value as an error message shows it: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_names(model: Any, loc: Sequence[Any]) -> list[str]:
    cls = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            continue
        f = cls.model_fields.get(part)
        ann = f.annotation if f else None
        cls = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return sorted(cls.model_fields)
    return []


def validate(model: Any, data: Any, prefix: tuple[str | int, ...], col: ProblemCollector) -> Any:
    """``model`` validated from ``data``, or None with its problems added to ``col``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        col.pydantic(prefix, exc, model)
        if isinstance(data, dict):
            _cross_field(model, data, exc, prefix, col)
        return None


def _cross_field(model: Any, data: dict[Any, Any], exc: ValidationError,
                 prefix: tuple[str | int, ...], col: ProblemCollector) -> None:
    """A field error stops pydantic before the model's own checks across fields (``api_key``
    with ``http_user``): run them again without the bad keys, so the entry shows every
    problem at once. A check that names a key left out would judge its default: skipped."""
    errors = exc.errors(include_url=False)
    if any(not e["loc"] for e in errors):
        return  # the cross-field checks ran (and spoke) already
    bad = {e["loc"][0] for e in errors}
    try:
        model.model_validate({k: v for k, v in data.items() if k not in bad})
    except ValidationError as again:
        for err in again.errors(include_url=False):
            text = str(err["msg"])
            if err["loc"] or any(re.search(rf"\b{re.escape(str(k))}\b", text) for k in bad):
                continue
            col.add(prefix, _message(err, model))

"""Secrets stay out of every message: which options are secret, and scrubbing free text.

An option is secret when its type is :class:`~pydantic.SecretStr` (or ``SecretBytes``) or
its name says so (``passwd``, ``password``, ``secret``, ``token``, ``api_key``,
``cloud_auth``, ...), and a URL's password (``scheme://user:PASSWORD@host``) is always
one. Config errors never show a secret option's value (:mod:`tailrace.problems` asks
:func:`secret_field`). Text that comes from elsewhere (an exception, a server's answer, a
third-party plugin's message) goes through :func:`scrub` on its way into a log line, a
lifecycle record (``status``, ``/api/v1/status``) or a dead letter: every secret value of
the loaded configs (:func:`register_config`) becomes ``***``, and so does any URL password.
"""

from __future__ import annotations

import base64
import re
import threading
import typing
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

__all__ = [
    "MASK",
    "MIN_SCRUB_LEN",
    "SECRET_NAME_RE",
    "is_secret_annotation",
    "mask_secrets",
    "register_config",
    "register_secrets",
    "scrub",
    "secret_field",
    "secret_values",
]

MASK = "***"

#: Option names that hold secrets whatever their type (a third-party plugin may declare
#: ``password: str``): their values are masked like ``SecretStr`` ones.
SECRET_NAME_RE = re.compile(
    r"passw|secret|token|api_?key|cloud_auth|credential|private_key|auth_key|access_key",
    re.IGNORECASE,
)

# scheme://user:password@host -> scheme://user:***@host (the password may not hold '@',
# '/' or blanks, as in any well-formed URL, where they are %-escaped).
_URL_PASSWORD_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*:)[^@/\s'\"]+@")
_SENTINEL_PASSWORD_RE = re.compile(r"(sentinel_password=)[^&\s'\"]+")

# Shorter values are not scrubbed from free text: they would mask ordinary words. Config
# errors mask a secret option whatever its length.
MIN_SCRUB_LEN = 4

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def is_secret_annotation(annotation: Any) -> bool:
    """True when ``annotation`` is or contains ``SecretStr``/``SecretBytes``."""
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(is_secret_annotation(a) for a in typing.get_args(annotation))


def secret_field(model: Any, name: str) -> bool:
    """Is option ``name`` of ``model`` (a pydantic model class) a secret?"""
    if SECRET_NAME_RE.search(name):
        return True
    fields = getattr(model, "model_fields", None) or {}
    f = fields.get(name)
    return f is not None and is_secret_annotation(f.annotation)


def _url_passwords(text: str) -> Iterator[str]:
    for m in _URL_PASSWORD_RE.finditer(text):
        yield text[m.end(1):m.end() - 1]
    for m in _SENTINEL_PASSWORD_RE.finditer(text):
        yield text[m.end(1):m.end()]


def _values_of(value: Any, secret: bool) -> Iterator[str]:
    if isinstance(value, (SecretStr, SecretBytes)):
        raw = value.get_secret_value()
        yield raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    elif isinstance(value, BaseModel):
        yield from secret_values(value)
    elif isinstance(value, str):
        if secret:
            yield value
        yield from _url_passwords(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _values_of(v, secret or (isinstance(k, str)
                                               and bool(SECRET_NAME_RE.search(k))))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _values_of(v, secret)


def secret_values(options: BaseModel) -> Iterator[str]:
    """Every secret value in ``options``: secret options, nested ones, URL passwords."""
    model = type(options)
    for name in model.model_fields:
        yield from _values_of(getattr(options, name, None), secret_field(model, name))


def register_secrets(values: Iterable[str]) -> None:
    """Add values that :func:`scrub` masks from now on, in this process."""
    global _pattern
    new = set()
    for v in values:
        if len(v) >= MIN_SCRUB_LEN:
            new.add(v)
            # The form an Authorization header or a client library may show it in.
            new.add(base64.b64encode(v.encode()).decode())
    with _lock:
        if new <= _values:
            return
        _values.update(new)
        # Longest first, so a value that contains another is masked whole.
        alts = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in alts))


def register_config(options: Iterable[BaseModel], urls: Iterable[str | None] = ()) -> None:
    """Register the secrets of a loaded config (its option models and broker URLs)."""
    found: list[str] = []
    for opts in options:
        found.extend(secret_values(opts))
    for url in urls:
        if url:
            found.extend(_url_passwords(url))
    register_secrets(found)


def scrub(text: str) -> str:
    """``text`` with every registered secret and any URL password replaced by ``***``."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _URL_PASSWORD_RE.sub(rf"\1{MASK}@", text)
    if "sentinel_password=" in text:
        text = _SENTINEL_PASSWORD_RE.sub(rf"\1{MASK}", text)
    return text


def mask_secrets(value: Any, model: Any = None) -> Any:
    """``value`` (config input, e.g. a whole plugin entry) with its secrets masked.

    Keys of ``model`` that are secret (:func:`secret_field`), keys whose name says secret,
    and URL passwords in strings are replaced; the rest is returned as it was.
    """
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and v is not None
                    and (secret_field(model, k) if model is not None
                         else bool(SECRET_NAME_RE.search(k)))
                    else mask_secrets(v, _nested_model(model, k)))
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, model) for v in value]
    if isinstance(value, tuple):
        return tuple(mask_secrets(v, model) for v in value)
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, (SecretStr, SecretBytes)):
        return MASK
    return value


def _nested_model(model: Any, key: Any) -> Any:
    fields = getattr(model, "model_fields", None) or {}
    f = fields.get(key) if isinstance(key, str) else None
    if f is None:
        return None
    for ann in (f.annotation, *typing.get_args(f.annotation)):
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann
    return None

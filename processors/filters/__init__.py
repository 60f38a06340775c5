"""Filter plugins: each transforms a batch of records and never talks to Redis."""

from __future__ import annotations

from .grep import GrepFilter
from .kubernetes import KubernetesFilter
from .modify import ModifyFilter
from .nest import NestFilter
from .parser import ParserFilter
from .python_filter import PythonFilter
from .record_modifier import RecordModifierFilter
from .rewrite_tag import RewriteTagFilter
from .throttle import ThrottleFilter

__all__ = [
    "GrepFilter",
    "KubernetesFilter",
    "ModifyFilter",
    "NestFilter",
    "ParserFilter",
    "PythonFilter",
    "RecordModifierFilter",
    "RewriteTagFilter",
    "ThrottleFilter",
]

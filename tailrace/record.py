"""Records and their deterministic ids.

A record (Fluent Bit's convention) is a map: the line under ``log``, ``time`` as epoch
seconds with a fraction, parsed fields at top level, agent metadata, and the reserved
``_id`` and ``_tag``. ``_id`` is derived from (agent, file identity, line offset), so
redoing a batch after a crash yields the same ids and sinks can write idempotently.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["ID_KEY", "TAG_KEY", "Record", "id_prefix", "record_id", "strip_reserved"]

ID_KEY = "_id"
TAG_KEY = "_tag"
Record = dict[str, Any]


def id_prefix(agent: str, file_identity: str) -> str:
    """The per-file part of every ``_id``: 16 hex chars of a hash of agent and file.

    Computed once per batch; a record id is this prefix, ``-`` and the line offset in hex.
    """
    digest = hashlib.blake2b(f"{agent}\0{file_identity}".encode(), digest_size=8).hexdigest()
    return digest + "-"


def record_id(agent: str, file_identity: str, offset: int) -> str:
    """The deterministic id of the line starting at ``offset`` (see :func:`id_prefix`)."""
    return f"{id_prefix(agent, file_identity)}{offset:x}"


def strip_reserved(record: Record) -> Record:
    """The record without ``_id`` and ``_tag`` (for outputs that write them elsewhere)."""
    return {k: v for k, v in record.items() if k != ID_KEY and k != TAG_KEY}

"""The ``sqlite`` output: records into a SQLite table, exactly once.

An example of a third-party output. It keeps tailrace's delivery contract: the write is
idempotent (``_id`` is the primary key and rows are inserted with ``INSERT OR IGNORE``), so
a batch redelivered after a crash writes nothing twice, and ``write_batch`` returns only
after the transaction is committed. One SQLite file allows one writer: ``single_writer``.

A sink builds its output in one thread and writes from another, so the connection is
opened with ``check_same_thread=False`` and used under a lock (SQLite's own rule is only
that two threads do not use one connection at once). A missing folder of ``path`` is
created (``mkdir: false`` makes it an error that names the folder).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from tailrace.errors import PipelineError
from tailrace.options import OutputOptions
from tailrace.outcome import Delivered, Outcome, Retry

__all__ = ["SqliteOutput", "SqliteOutputOptions"]


class SqliteOutputOptions(OutputOptions):
    path: str = Field(description="SQLite database file (relative to the config file).")
    table: str = Field("logs", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Table name.")
    mkdir: bool = Field(True, description="Create the folder of `path` when it is missing.")


class SqliteOutput:
    name: ClassVar[str] = "sqlite"
    description: ClassVar[str] = "Write records into a SQLite table, once per `_id`."
    Options: ClassVar[type[SqliteOutputOptions]] = SqliteOutputOptions
    single_writer: ClassVar[bool] = True

    def __init__(self, options: SqliteOutputOptions, ctx: Any) -> None:
        self.table = options.table
        path = Path(ctx.resolve_path(options.path))
        try:
            if options.mkdir:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.parent.is_dir():
                raise PipelineError(f"sqlite output: folder {str(path.parent)!r} of path "
                                    f"{options.path!r} does not exist; create it or set "
                                    "mkdir: true")
            self.db = sqlite3.connect(str(path), check_same_thread=False)
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} "
                            "(id TEXT PRIMARY KEY, tag TEXT, time REAL, record TEXT)")
            self.db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise PipelineError(f"sqlite output: cannot open {str(path)!r}: {exc}") from None
        self.lock = threading.Lock()

    def write_batch(self, records: list[dict[str, Any]]) -> Outcome:
        rows = [(r["_id"], r.get("_tag"), r.get("time"),
                 json.dumps({k: v for k, v in r.items() if k not in ("_id", "_tag")},
                            default=str))
                for r in records]
        try:
            with self.lock, self.db:
                self.db.executemany(f"INSERT OR IGNORE INTO {self.table} VALUES (?, ?, ?, ?)",
                                    rows)
        except sqlite3.OperationalError as exc:  # locked or full: try again later
            return Retry(f"sqlite: {exc}", records)
        return Delivered()

    def close(self) -> None:
        with self.lock:
            self.db.close()

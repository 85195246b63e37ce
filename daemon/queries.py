"""Read-only SQL for clients, on connections that cannot write.

Three locks on the door: the connection is opened ``mode=ro`` with ``query_only``;
an authorizer denies writes, ATTACH, state-changing pragmas and extension loading;
and a progress handler stops a query that runs past its time limit. A row cap
bounds the reply, and SQLite's length limit every value a query makes on the way
(``randomblob(900000000)``, ``printf('%.*c', …)``, a ``replace`` or ``group_concat`` that
grows): one no reply could carry is refused before it is allocated (many at once meet
SQLite's heap cap, ``heap.cap_sqlite``). Queries run on their own threads and connections,
so a slow one delays neither ingestion nor ``csm status``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from csm.daemon import turns
from csm.daemon.rawtext import RAW
from csm.daemon.store import open_reader
from csm.shared.errors import QueryError
from csm.shared.protocol import Rows

# Pragmas that only read, whatever their argument names (a table, an index).
_READ_PRAGMAS_WITH_ARG = frozenset({
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
})
# Pragmas that read when called bare and change state when given a value (user_version = 3).
_READ_PRAGMAS = _READ_PRAGMAS_WITH_ARG | frozenset({
    "database_list", "compile_options", "function_list", "pragma_list", "table_list", "collation_list",
    "module_list", "data_version", "page_count", "page_size", "freelist_count", "user_version", "schema_version",
    "journal_mode", "encoding",
})
# Functions a SELECT could use to reach outside the database.
_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"})
_ALLOWED = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})


def _authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
    if action in _ALLOWED:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_UPDATE and arg1 in ("sqlite_master", "sqlite_schema"):
        # SQLite asks this while preparing a pragma table-valued function
        # (``pragma_table_info('x')``); the read-only connection could not write it anyway.
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1:
        name = arg1.lower()
        if name in _READ_PRAGMAS_WITH_ARG or (name in _READ_PRAGMAS and arg2 is None):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def open_query_connection(db: Path, max_bytes: int) -> sqlite3.Connection:
    """``max_bytes``: the reply's limit (``query_max_bytes``), also the largest value a query may make."""
    conn = open_reader(db)
    conn.set_authorizer(_authorizer)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_bytes)
    return conn


def progress(deadline: float) -> Callable[[], int]:
    """SQLite's progress handler for a query: take turns with live appends; stop past ``deadline``."""

    def step() -> int:
        turns.give_way()
        return int(time.monotonic() > deadline)

    return step


class time_limit:
    """Stop what runs on ``conn`` past ``seconds`` (SQLite reports it as 'interrupted'), taking turns with
    live appends meanwhile: the one time limit of every request that reads (``app.ROUTES`` says which)."""

    def __init__(self, conn: sqlite3.Connection, seconds: float, advice: str) -> None:
        self.conn = conn
        self.seconds = seconds
        self.advice = advice

    def __enter__(self) -> None:
        self.conn.set_progress_handler(progress(time.monotonic() + self.seconds), turns.STEPS)

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        self.conn.set_progress_handler(None, 0)
        if isinstance(e, sqlite3.OperationalError) and str(e) == "interrupted":
            raise QueryError(f"stopped after the {self.seconds:g} s time limit; {self.advice}") from None


def _size(row: tuple[Any, ...]) -> int:
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)


def run_sql(conn: sqlite3.Connection, sql: str, params: list[Any], max_rows: int, max_bytes: int) -> Rows:
    """Run one statement. The reply stops at ``max_rows`` rows or about ``max_bytes`` of values,
    whichever comes first, and says which (``limit``); the rest is never read."""
    max_rows = max(0, max_rows)
    rows: list[list[Any]] = []
    limit = ""
    try:
        cur = conn.execute(sql, params)
        columns = [d[0] for d in cur.description or ()]
        size = 0
        while not limit:
            batch = cur.fetchmany(min(1000, max_rows + 1 - len(rows)))
            if not batch:
                break
            for row in batch:
                size += _size(row)
                if len(rows) == max_rows:
                    limit = "rows"
                elif size > max_bytes:
                    limit = "bytes"
                if limit:
                    break
                rows.append(list(row))
        cur.close()  # an unfinished statement would hold its read snapshot and starve WAL checkpoints
    except MemoryError:  # SQLite's heap cap (heap.cap_sqlite), or Python's own
        raise QueryError("query stopped: it needs more memory than csmd allows; select fewer or smaller "
                         "values at once") from None
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as e:
        text = str(e)
        if text == "interrupted":
            raise  # the time limit's (``time_limit``)
        if text == "string or blob too big":
            raise QueryError(
                f"query stopped: it makes a value over {max_bytes} bytes, more than a reply may hold "
                "(query_max_bytes in csmd's config); a transcript's lines: 'csm export --raw'") from None
        if "not authorized" in text or "authorization denied" in text or "readonly" in text or "read-only" in text:
            raise QueryError("csm query sql is read-only: only SELECT (and read-only PRAGMAs) are allowed") from None
        raise QueryError(f"SQL error: {text}") from None
    return Rows(columns=columns, rows=rows, truncated=bool(limit), limit=limit)


def list_errors(conn: sqlite3.Connection, max_rows: int) -> Rows:
    """The bad lines, and the stored lines whose derived data failed, as ``csm query errors`` shows
    them: the first bytes as text, escapes for the rest."""
    cur = conn.execute(
        "SELECT file_path, CASE WHEN line_offset >= 0 THEN line_offset END, length, error, head "
        "FROM sync_errors UNION ALL "
        f"SELECT m.file_path, e.line_offset, length(CAST({RAW} AS BLOB)), "
        f"       le.part || ': ' || le.error || ' (the line is stored)', CAST(substr({RAW}, 1, 200) AS BLOB) "
        "FROM line_errors le JOIN events e ON e.id = le.event_id JOIN sync_metadata m ON m.file_id = e.file_id "
        "ORDER BY 1, 2"
    )
    rows = cur.fetchmany(max_rows + 1)
    out = [[p, o, n, e, _printable(h)] for p, o, n, e, h in rows[:max_rows]]
    return Rows(columns=["file", "offset", "length", "error", "head"], rows=out, truncated=len(rows) > max_rows)


def _printable(head: bytes) -> str:
    text = head.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)

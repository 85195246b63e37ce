"""A reader's view of the archive: the main database and the archive files, as one.

Why: ``csm archive`` (``daemon/archive.py``) moves old sessions' lines out of the main file, and every
query, search, export, show and page must still see them without knowing where they are. So each
read-only connection (``store.open_reader``) attaches the archives the main database lists
(``archives``), read-only (``mode=ro``, and the connection is ``query_only``), and gets a temporary
view ``events`` that is ``main.events`` UNION ALL each archive's ``events``: the SQL of every reader
(and the ``lines`` view) names ``events`` and reads them all. SQLite pushes a query's
``WHERE``/join constraints into each arm, so a lookup by id or by (file, generation, offset) stays an
index lookup in each file (``bench/RESULTS.md``, "Archival").

A line is in exactly one place: an archive's row counts only where ``main.events`` lacks its id, so
the moment of a move when a line is in both (copied, not yet deleted here) shows it once.

An archive that is missing or cannot be read is left out and named: ``problem`` (``csm status``),
``listing`` (``csm archive list``), and ``readable`` for the session whose lines are in it
(``csm show``, ``csm export``); everything else keeps working. ``refresh`` runs before each request
and looks again when an archive is added or its file changes (two ``stat``s).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from csm.shared.errors import ArchiveUnreadable
from csm.shared.paths import archive_path
from csm.shared.protocol import ArchiveInfo

COLUMNS = "id, file_id, generation, line_offset, session_id, uuid, parent_uuid, type, timestamp, raw, zraw, dict_id"
"""The columns of ``events``, in main and in every archive."""
SCHEMA_PREFIX = "archive_"
"""An archive ``2025`` is attached as ``archive_2025``."""


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime): a file put back, replaced or written over by hand is looked at again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class Reader(sqlite3.Connection):
    """A read-only connection that keeps what ``refresh`` needs: its authorizer (set again after
    attaching, which the authorizer of user SQL refuses), the archives it attached (by file identity),
    and those it could not read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.authorizer: Callable[..., int] | None = None
        self.main: Path | None = None
        self.seen: dict[str, tuple[int, int, int, int] | None] | None = None
        self.broken: dict[str, str] = {}
        """Archive name -> why it cannot be read, naming its file."""

    def set_authorizer(self, authorizer: Callable[..., int] | None) -> None:  # type: ignore[override]
        self.authorizer = authorizer
        super().set_authorizer(authorizer)


def refresh(conn: sqlite3.Connection) -> None:
    """Attach the archives the main database lists, and give ``conn`` its ``events`` over them all;
    nothing to do (a query and a ``stat`` per archive) when they have not changed since last time."""
    if not isinstance(conn, Reader):
        return
    if conn.main is None:
        conn.main = Path(conn.execute("PRAGMA main.database_list").fetchone()[2])
    names = [r[0] for r in conn.execute("SELECT name FROM main.archives ORDER BY name")]
    seen = {n: _identity(archive_path(conn.main, n)) for n in names}
    if seen != conn.seen:
        _attach(conn, conn.main, seen)


def _attach(conn: Reader, db: Path, seen: dict[str, tuple[int, int, int, int] | None]) -> None:
    sqlite3.Connection.set_authorizer(conn, None)
    conn.execute("PRAGMA query_only = 0")  # a TEMP view is a write of the connection's own schema
    try:
        for _, schema, _ in conn.execute("PRAGMA database_list").fetchall():
            if schema.startswith(SCHEMA_PREFIX):
                conn.execute(f"DETACH {schema}")
        conn.broken = {}
        arms = ["SELECT " + COLUMNS + " FROM main.events"]
        for name, identity in seen.items():
            path, schema = archive_path(db, name), SCHEMA_PREFIX + name
            if identity is None:
                conn.broken[name] = f"archive {path} is missing"
                continue
            try:
                conn.execute(f"ATTACH ? AS {schema}", (f"file:{path}?mode=ro",))
                conn.execute(f"SELECT count(*) FROM {schema}.sqlite_master WHERE name = 'events'").fetchone()
                conn.execute(f"SELECT id FROM {schema}.events LIMIT 1").fetchall()
            except sqlite3.Error as e:
                conn.broken[name] = f"archive {path} cannot be read ({e})"
                if any(r[1] == schema for r in conn.execute("PRAGMA database_list")):
                    conn.execute(f"DETACH {schema}")
                continue
            arms.append(f"SELECT {COLUMNS} FROM {schema}.events a "
                        "WHERE NOT EXISTS (SELECT 1 FROM main.events x WHERE x.id = a.id)")
        conn.execute("DROP VIEW IF EXISTS temp.events")
        if len(arms) > 1:
            conn.execute("CREATE TEMP VIEW events AS " + " UNION ALL ".join(arms))
        conn.seen = seen
    finally:
        conn.execute("PRAGMA query_only = 1")
        sqlite3.Connection.set_authorizer(conn, conn.authorizer)


def readable(conn: sqlite3.Connection, file_id: int) -> None:
    """Raise ``ArchiveUnreadable`` when this file's lines are in an archive ``conn`` cannot read."""
    if not isinstance(conn, Reader) or not conn.broken:
        return
    r = conn.execute("SELECT archive FROM main.archived_files WHERE file_id = ?", (file_id,)).fetchone()
    if r is not None and r[0] in conn.broken:
        raise ArchiveUnreadable(f"{conn.broken[r[0]]}: this session's lines are in it; put the file back (from a "
                                "backup) or move the session's lines out of csm's reach ('csm db check' checks "
                                "every archive)")


def problem(conn: sqlite3.Connection) -> str | None:
    """The archives ``conn`` cannot read and how many sessions that hides (``csm status``)."""
    if not isinstance(conn, Reader) or not conn.broken:
        return None
    names = sorted(conn.broken)
    hidden = conn.execute(f"SELECT count(*) FROM main.archived_files WHERE archive IN ({','.join('?' * len(names))})",
                          names).fetchone()[0]
    return f"{'; '.join(conn.broken[n] for n in names)}: {hidden} archived sessions cannot be read; the rest can"


def figures(conn: sqlite3.Connection) -> tuple[int, int]:
    """(sessions, lines) moved into archives."""
    sessions, lines = conn.execute("SELECT count(*), COALESCE(sum(lines), 0) FROM main.archived_files").fetchone()
    return sessions, lines


def listing(conn: sqlite3.Connection) -> list[ArchiveInfo]:
    """Each archive with its sessions, lines, the time its sessions span, its file's size and any problem."""
    refresh(conn)
    assert isinstance(conn, Reader) and conn.main is not None
    out = []
    for name, sessions, lines, first, last in conn.execute(
            "SELECT a.name, count(f.file_id), COALESCE(sum(f.lines), 0), min(s.first_ts), max(s.last_ts) "
            "FROM main.archives a LEFT JOIN main.archived_files f ON f.archive = a.name "
            "LEFT JOIN main.session_stats s ON s.file_id = f.file_id GROUP BY a.name ORDER BY a.name"):
        path = archive_path(conn.main, name)
        identity = _identity(path)
        out.append(ArchiveInfo(name=name, file=str(path), sessions=sessions, lines=lines, first=first, last=last,
                               bytes=identity[2] if identity else 0, problem=conn.broken.get(name)))
    return out

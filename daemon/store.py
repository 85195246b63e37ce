"""The SQLite database: opening, migrating, and the writer's few statements.

There is exactly one writer connection, owned by the ingest thread. Every change
that moves a checkpoint is one ``BEGIN IMMEDIATE`` transaction holding both the rows
and the new offset, so the two can never disagree after a crash or power loss
(WAL + ``synchronous=NORMAL``: a committed transaction survives a csmd crash; a power
loss may roll back the last few, and the rolled-back bytes are simply read again).
Readers use their own read-only connections (``open_reader``) and never block it.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from csm.daemon import attach, heap, rawtext
from csm.daemon.rawtext import RAW
from csm.daemon.migrations import EARLIER_NAMES, MIGRATIONS, OUTSIDE_TRANSACTION
from csm.daemon.diagnose import diagnose, unwritable
from csm.daemon.notify import Notifier
from csm.daemon.private import private_file
from csm.shared import paths
from csm.shared.errors import DatabaseError

log = logging.getLogger("csm.store")

if TYPE_CHECKING:
    from csm.daemon.batch import BadLineRow, Batch, EventRow, LineError, Move
    from csm.daemon.sinks import Sink

BUSY_TIMEOUT_MS = 5000
PAGE_SIZE = 16384
READER_CACHE_KB = 512
JOURNAL_LIMIT_BYTES = 4 << 20
"""What is left of the WAL file each time the writer starts it again (``journal_size_limit``): a
burst's high-water mark is given back at the next reset, not kept for ever."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso_mtime(mtime_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime_ns / 1e9))


class FileRow(msgspec.Struct, kw_only=True, gc=False):
    """A file's checkpoint row (``sync_metadata``). csmd keeps one per file; it holds only strings,
    numbers and bytes, so the garbage collector need not track it (``gc=False``)."""

    file_id: int
    path: str
    root: str
    project: str
    session_key: str
    parent_session: str | None
    dev: int
    inode: int
    size: int
    mtime_ns: int
    offset: int
    generation: int = 0
    head_len: int = 0
    head_hash: bytes | None = None
    tail_hash: bytes | None = None
    gone_at: str | None = None

    def __post_init__(self) -> None:
        """One copy of each root and project, not one per file: csmd keeps every file's row (3,000
        on a 1 GB history), and these two repeat across them."""
        self.root = sys.intern(self.root)
        self.project = sys.intern(self.project)


_FILE_FIELDS = {  # FileRow field: its sync_metadata column
    "file_id": "file_id", "path": "file_path", "root": "root", "project": "project", "session_key": "session_key",
    "parent_session": "parent_session", "dev": "dev", "inode": "inode", "size": "size", "mtime_ns": "mtime_ns",
    "offset": "last_position", "generation": "generation", "head_len": "head_len", "head_hash": "head_hash",
    "tail_hash": "tail_hash", "gone_at": "gone_at",
}
_FILE_COLUMNS = ", ".join(_FILE_FIELDS.values())


def _file_row(r: Sequence[Any]) -> FileRow:
    return FileRow(**dict(zip(_FILE_FIELDS, r)))


def _private_files(db: Path) -> None:
    """Refuse a database, WAL or shared-memory file of another user; close ours to others (0600).

    Checked before SQLite opens them and again once it has (WAL on), so one made in the
    moment between is refused too. csmd's umask (077) makes the files it creates 0600.
    """
    for path, what in paths.db_files(db):
        private_file(path, what)


def migrate(conn: sqlite3.Connection, db: Path) -> None:
    """Apply the migrations after the database's schema version (``PRAGMA user_version``), each in the
    transaction that records its number."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_csm_migrations'").fetchone():
        version = _adopt_earlier(conn, db)
    if version > len(MIGRATIONS):
        raise _newer(db, f"schema version {version}")
    for number in range(version + 1, len(MIGRATIONS) + 1):
        name, sql = MIGRATIONS[number - 1]
        if name in OUTSIDE_TRANSACTION:
            _rewrite(conn, db, name, sql)
            sql = ""
        _apply(conn, f"{sql}\nPRAGMA user_version = {number};")
        if name == "tool_text_unstemmed":
            _rebuild_notice(conn, name)
        # Each migration's pages (a VACUUM's: the whole file) go to the database at once, not kept in
        # the WAL beside it: the disk holds the schema once, and the first sync starts on an empty WAL.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


REBUILD_LINES_PER_S = 15_000
"""The estimate logged for migration 13's rebuild of the tool-text index: the catch-up indexed the 1 GB bench
corpus's 203k messages in 8-9 s of CPU at load 6 (bench/RESULTS.md, "Tool text"); a loaded machine is slower."""


def _rebuild_notice(conn: sqlite3.Connection, name: str) -> None:
    """Say what migration 13 left csmd to do, and for how long search misses tool text (none on a new database)."""
    main, archived = conn.execute("SELECT (SELECT count(*) FROM search_tools_pending), "
                                  "(SELECT COALESCE(sum(lines), 0) FROM archived_files)").fetchone()
    if main or archived:
        log.warning("migration %s: the tool-text search index is rebuilt without stemming from the stored lines: "
                    "%d messages%s, newest first, as idle work after this start's rescan (bounded transactions that "
                    "give way to new lines; about %.0f s of CPU); until then search --include-tools finds the lines "
                    "rebuilt so far", name, main, f" and {archived} archived lines" if archived else "",
                    (main + archived) / REBUILD_LINES_PER_S)


def _adopt_earlier(conn: sqlite3.Connection, db: Path) -> int:
    """A database of a csm that recorded migrations by name: its version from those names, once.

    Such a database may miss a migration numbered below one it has (one made by a csm built while
    the line-errors and session-identity migrations were landing: 1, 2, 3 and 5 but not 4); the
    missing ones, which create what the later ones do not touch, are applied with the adoption."""
    names = {r[0] for r in conn.execute("SELECT name FROM _csm_migrations")}
    if unknown := sorted(names - EARLIER_NAMES.keys()):
        raise _newer(db, ", ".join(unknown))
    applied = {EARLIER_NAMES[n] for n in names}
    version = max(applied, default=0)
    missing = [MIGRATIONS[n - 1][1] for n in range(1, version + 1) if n not in applied]
    _apply(conn, "\n".join([*missing, "DROP TABLE _csm_migrations;", f"PRAGMA user_version = {version};"]))
    return version


def _apply(conn: sqlite3.Connection, sql: str) -> None:
    try:
        conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nCOMMIT;")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _newer(db: Path, what: str) -> DatabaseError:
    return DatabaseError(
        f"database {db} was written by a newer csm ({what}; this csm knows {len(MIGRATIONS)} migrations): "
        "upgrade csm; or move the file away and start csmd to rebuild it from the transcripts that still "
        "exist (a rebuild cannot bring back the lines of transcripts Claude Code has deleted since)"
    )


REWRITE_MB_PER_S = 100
"""The estimate logged for VACUUM: it rewrote the real fixtures' 38 MB database in 0.17-0.25 s here
(file cached, loaded machine); half that speed is allowed for a file read from disk."""


def _rewrite(conn: sqlite3.Connection, db: Path, name: str, sql: str) -> None:
    """Run a migration that rewrites the whole file (``OUTSIDE_TRANSACTION``), before the transaction that
    records its number, saying first what it does and how long it will take. Its temporary copy goes to
    disk (``temp_store = FILE``): in memory it would cost the database's size in RAM."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # new database, or done before a kill
        return
    mb = (db.stat().st_size if db.exists() else 0) / 2**20
    log.warning("migration %s: rewriting database %s (%.0f MB) once so free space can be given back "
                "while csmd runs; about %.0f s, needing up to %.0f MB free on its disk; csmd starts after it",
                name, db, mb, mb / REWRITE_MB_PER_S, 2 * mb)
    Notifier().starting_slowly(60 + 3 * mb / REWRITE_MB_PER_S, f"migration {name}: rewriting the database once")
    started = time.monotonic()
    conn.execute("PRAGMA temp_store = FILE")
    try:
        conn.executescript(sql)
    finally:
        conn.execute("PRAGMA temp_store = MEMORY")
    log.warning("migration %s: done in %.1f s", name, time.monotonic() - started)


def open_writer(db: Path) -> sqlite3.Connection:
    """Open (creating and migrating) the database for the one writer."""
    try:
        db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_files(db)
        if refused := unwritable(db, f"cannot open database {db}"):
            raise refused
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, factory=heap.WriterConnection)
        rawtext.register(conn, db)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Lines average 2 KB and many exceed a 4 KB page: 16 KB pages need fewer overflow
        # pages and b-tree splits (inserting the 100 MB bench corpus: 0.40 -> 0.32 s). Only a
        # new, empty database takes it; an existing one keeps its page size.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        # Free pages given back a few at a time (``daemon/space.py``); like the page size, only a new
        # database takes it here (an existing one is rewritten once by a migration).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise DatabaseError(f"{db}: cannot switch to WAL mode (is it on a network filesystem?)")
        _private_files(db)
        conn.execute("PRAGMA synchronous = NORMAL")
        # 2 MB, SQLite's default: the writer appends at the right edge of its b-trees, so a
        # bigger cache buys little speed, and csmd must stay under 50 MB RSS (8 MB -> 2 MB with
        # 1 MB batches: peak RSS of a 100 MB sync 48 -> 37 MB, same CPU).
        conn.execute("PRAGMA cache_size = -2048")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_LIMIT_BYTES}")
        migrate(conn, db)
        return conn
    except OSError as e:
        raise DatabaseError(f"cannot create the folder of database {db}: {e.strerror}") from None
    except sqlite3.Error as e:
        raise diagnose(db, e, "cannot open database") from None


def open_reader(db: Path) -> sqlite3.Connection:
    """A read-only connection: it can never take the write lock, so it never delays ingestion."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, check_same_thread=False,
                           factory=attach.Reader)
    rawtext.register(conn, db)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    rawtext.shadow_lines(conn)
    conn.execute("PRAGMA query_only = 1")
    attach.refresh(conn)
    # csmd has up to six readers (status, two per query thread, an export): at SQLite's default
    # 2 MB each they held 8-9 MB of csmd's heap under four clients; the OS caches the file anyway.
    conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KB}")
    return conn


class Store:
    """The writer's statements. Not thread-safe: one ingest thread calls it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.commits = 0
        """Write transactions committed since csmd started (``csm status``): a round of appends to many
        files is one (``together``), not one per file."""
        self.holding = False
        """Inside ``together``: every ``transaction`` joins one open transaction, ended by ``commit``."""

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA optimize")
        finally:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; on any failure (the COMMIT included: disk full,
        busy) the transaction is rolled back, so the connection is clean for the retry.

        Inside ``together`` it joins the transaction held open there (begun by the first write), and
        a failure propagates to ``together``, which rolls back everything since its last ``commit``."""
        if self.holding:
            if not self.conn.in_transaction:
                self.conn.execute("BEGIN IMMEDIATE")
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.commit()
        except BaseException:
            self._rollback()
            raise

    @contextmanager
    def together(self) -> Iterator[None]:
        """Hold one transaction open for every ``transaction`` inside, until ``commit``; on any failure
        roll back what is not committed yet. The caller commits (it writes what it kept for the commit
        first), at the latest before leaving."""
        self.holding = True
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        finally:
            self.holding = False

    def commit(self) -> None:
        """Commit the open transaction, if one is open (inside ``together`` nothing may have been written)."""
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
            self.commits += 1
            heap.TRIM.soon()  # what the transaction's rows and batches took is free now

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled it back; the original error is the one to report

    # --- files ---------------------------------------------------------------------

    def files(self) -> list[FileRow]:
        return [_file_row(r) for r in self.conn.execute(f"SELECT {_FILE_COLUMNS} FROM sync_metadata")]

    def next_file_id(self) -> int:
        return self.conn.execute("SELECT COALESCE(max(file_id), 0) + 1 FROM sync_metadata").fetchone()[0]

    def save_file(self, f: FileRow, mtime_iso: str) -> None:
        """Insert or update a checkpoint row (call inside a transaction)."""
        self.conn.execute(
            "INSERT INTO sync_metadata (file_path, last_position, last_modified, last_synced_at, file_id, root, "
            "project, session_key, parent_session, dev, inode, size, mtime_ns, generation, head_len, head_hash, "
            "tail_hash, gone_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(file_id) DO UPDATE SET file_path=excluded.file_path, last_position=excluded.last_position, "
            "last_modified=excluded.last_modified, last_synced_at=excluded.last_synced_at, root=excluded.root, "
            "project=excluded.project, session_key=excluded.session_key, "
            "parent_session=COALESCE(excluded.parent_session, parent_session), dev=excluded.dev, "
            "inode=excluded.inode, size=excluded.size, mtime_ns=excluded.mtime_ns, generation=excluded.generation, "
            "head_len=excluded.head_len, head_hash=excluded.head_hash, tail_hash=excluded.tail_hash, "
            "gone_at=excluded.gone_at",
            (f.path, f.offset, mtime_iso, now_iso(), f.file_id, f.root, f.project, f.session_key, f.parent_session,
             f.dev, f.inode, f.size, f.mtime_ns, f.generation, f.head_len, f.head_hash, f.tail_hash, f.gone_at),
        )

    def with_inode(self, dev: int, inode: int) -> list[int]:
        """Checkpoints, live or gone, made on this (dev, inode): the live ones first, then the newest."""
        return [r[0] for r in self.conn.execute(
            "SELECT file_id FROM sync_metadata WHERE dev = ? AND inode = ? ORDER BY gone_at IS NOT NULL, file_id DESC",
            (dev, inode))]

    def gone_at_path(self, path: str) -> int | None:
        """The checkpoint whose file was last seen at ``path`` and is gone (the latest, if several)."""
        r = self.conn.execute("SELECT file_id FROM sync_metadata WHERE file_path = ? AND gone_at IS NOT NULL "
                              "ORDER BY gone_at DESC, file_id DESC LIMIT 1", (path,)).fetchone()
        return r[0] if r else None

    def mark_gone(self, file_id: int, when: str) -> None:
        self.conn.execute("UPDATE sync_metadata SET gone_at = ? WHERE file_id = ?", (when, file_id))

    # --- rows ----------------------------------------------------------------------

    def write_batch(self, b: Batch, checkpoint: FileRow, mtime_iso: str, sinks: Iterable[Sink]) -> None:
        """One transaction: a batch's rows, what derives from them (session figures, the sinks' data, line
        errors) and the checkpoint past them."""
        with self.transaction():
            self.write_rows(b, checkpoint, mtime_iso)
            for sink in sinks:
                sink.write(self)

    def write_rows(self, b: Batch, checkpoint: FileRow, mtime_iso: str) -> None:
        """A batch's rows, session figures, bad lines, line errors and the checkpoint past them (call inside a
        transaction; the sinks' data is written once per transaction, by the caller)."""
        if b.rows:
            self.insert_events(b.rows)
        if b.moves:
            self.reattach(b.moves)
        if b.errors:
            self.insert_errors(b.errors)
        if b.error_moves:
            self.reattach_errors(b.error_moves)
        if (a := b.agg) is not None:
            f = checkpoint
            self.upsert_sessions([(
                f.file_id, f.session_key, a.project, a.parent or f.parent_session, int(a.is_subagent), a.cwd,
                a.first_ts, a.last_ts, a.lines, a.messages, a.custom_title, a.ai_title, a.summary,
                a.first_prompt,
            )])
            self.add_models([(f.file_id, m) for m in a.models])
        if b.line_errors:
            self.insert_line_errors(b.line_errors)
        self.save_file(checkpoint, mtime_iso)

    def insert_events(self, rows: Iterable[EventRow]) -> None:
        """Ids are assigned by the writer (``max_event_id`` + 1, …) so that derived tables filled in
        the same transaction (sinks) can point at a row before it is inserted.

        ``raw`` is the line's str, or for a long line its UTF-8 bytes (checked by the caller): the
        CAST stores those unchanged as TEXT, so no str of a long line is made (it costs a copy
        per row, which is why ordinary lines are bound as their str; a str's CAST is free).
        """
        self.conn.executemany(
            "INSERT INTO events (id, file_id, generation, line_offset, session_id, uuid, parent_uuid, type, "
            "timestamp, raw) VALUES (?,?,?,?,?,?,?,?,?,CAST(? AS TEXT))",
            map(tuple, rows),  # exact tuples: sqlite3 binds a tuple subclass item by item, a third slower
        )

    def max_event_id(self) -> int:
        """The highest id given out, archived lines' included (``archives.max_id``): an id is never reused."""
        return self.conn.execute("SELECT max((SELECT COALESCE(max(id), 0) FROM events), "
                                 "(SELECT COALESCE(max(max_id), 0) FROM archives))").fetchone()[0]

    def old_generation_rows(self, file_id: int, generation: int) -> Iterator[tuple[int, str]]:
        """(id, raw) of a file's rows from earlier generations, to re-attach on a re-read."""
        return self.conn.execute(
            f"SELECT e.id, {RAW} FROM events e WHERE e.file_id = ? AND e.generation < ?", (file_id, generation)
        )

    def reattach(self, moves: Iterable[Move]) -> None:
        """An unchanged line found again at a new position."""
        self.conn.executemany("UPDATE events SET generation = ?, line_offset = ? WHERE id = ?", moves)

    def old_generation_errors(self, file_id: int, generation: int) -> Iterator[tuple[int, int, bytes]]:
        """(id, length, head) of a file's bad lines from earlier generations, to find again on a re-read."""
        return self.conn.execute(
            "SELECT id, length, head FROM sync_errors WHERE file_id = ? AND generation < ? AND line_offset >= 0",
            (file_id, generation),
        )

    def reattach_errors(self, moves: Iterable[Move]) -> None:
        """A bad line found again by a re-read."""
        self.conn.executemany("UPDATE sync_errors SET generation = ?, line_offset = ? WHERE id = ?", moves)

    def clear_unreadable(self, file_id: int) -> None:
        """The file can be read again: its 'cannot read' error is no longer true."""
        self.conn.execute("DELETE FROM sync_errors WHERE file_id = ? AND line_offset < 0", (file_id,))

    def files_with_prompt(self) -> set[int]:
        """Files whose session has its first prompt (its title of last resort) already."""
        return {r[0] for r in self.conn.execute("SELECT file_id FROM session_stats WHERE first_prompt IS NOT NULL")}

    def unreadable_files(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT file_id FROM sync_errors WHERE line_offset < 0")}

    def insert_errors(self, rows: Iterable[BadLineRow]) -> None:
        ts = now_iso()
        self.conn.executemany(
            "INSERT OR IGNORE INTO sync_errors (file_id, file_path, generation, line_offset, length, error, head, "
            "seen_at) VALUES (?,?,?,?,?,?,?,?)",
            [(*r, ts) for r in rows],
        )

    def insert_line_errors(self, rows: Iterable[LineError]) -> None:
        ts = now_iso()
        self.conn.executemany("INSERT OR REPLACE INTO line_errors (event_id, part, error, seen_at) VALUES (?,?,?,?)",
                              [(*r, ts) for r in rows])

    def upsert_sessions(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """rows: (file_id, session_id, project, parent, is_subagent, cwd, first_ts, last_ts, lines, messages,
        custom_title, ai_title, summary, first_prompt). A session is its file. Counts add up; titles: the last
        one wins, except the first prompt, which is kept."""
        self.conn.executemany(
            "INSERT INTO session_stats (file_id, session_id, project, parent_session_id, is_subagent, cwd, first_ts, "
            "last_ts, lines, messages, custom_title, ai_title, summary, first_prompt) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(file_id) DO UPDATE SET "
            "parent_session_id = COALESCE(parent_session_id, excluded.parent_session_id), "
            "cwd = COALESCE(excluded.cwd, cwd), "
            "first_ts = CASE WHEN first_ts IS NULL OR excluded.first_ts < first_ts "
            "THEN COALESCE(excluded.first_ts, first_ts) ELSE first_ts END, "
            "last_ts = CASE WHEN last_ts IS NULL OR excluded.last_ts > last_ts "
            "THEN COALESCE(excluded.last_ts, last_ts) ELSE last_ts END, "
            "lines = lines + excluded.lines, messages = messages + excluded.messages, "
            "custom_title = COALESCE(excluded.custom_title, custom_title), "
            "ai_title = COALESCE(excluded.ai_title, ai_title), "
            "summary = COALESCE(excluded.summary, summary), "
            "first_prompt = COALESCE(first_prompt, excluded.first_prompt)",
            rows,
        )

    def move_session(self, file_id: int, old: tuple[str, str], new: tuple[str, str]) -> None:
        """A session's file was renamed or moved: its figures, its usage rows and its search text take
        the new (session id, project). Usage rows move as a delete and an insert, so the triggers keep
        ``usage_slots`` exact."""
        (old_id, old_project), (session_id, project) = old, new
        q = self.conn.execute
        q("UPDATE session_stats SET session_id = ?, project = ? WHERE file_id = ?", (session_id, project, file_id))
        q("UPDATE message_text SET session_id = ? WHERE event_id IN (SELECT id FROM events WHERE file_id = ?)",
          (session_id, file_id))
        mine = ("FROM usage_entries WHERE session_id = ? AND project = ? AND event_id IN "
                "(SELECT id FROM events WHERE file_id = ?)")
        q(f"CREATE TEMP TABLE IF NOT EXISTS moved_usage AS SELECT * {mine} AND 0", (old_id, old_project, file_id))
        q(f"INSERT INTO temp.moved_usage SELECT * {mine}", (old_id, old_project, file_id))
        q(f"DELETE {mine}", (old_id, old_project, file_id))
        q("UPDATE temp.moved_usage SET session_id = ?, project = ?", (session_id, project))
        q("INSERT INTO usage_entries SELECT * FROM temp.moved_usage")
        q("DELETE FROM temp.moved_usage")

    def add_models(self, rows: Iterable[tuple[int, str]]) -> None:
        """rows: (file_id, model)."""
        self.conn.executemany("INSERT OR IGNORE INTO session_models VALUES (?, ?)", rows)

    # --- figures -------------------------------------------------------------------

    def count_events(self) -> int:
        return self.conn.execute("SELECT count(*) FROM events").fetchone()[0]


def figures(conn: sqlite3.Connection) -> dict[str, int]:
    """The small counts ``csm status`` shows; cheap, so any reader may ask at any time."""
    q = conn.execute
    return {
        "files": q("SELECT count(*) FROM sync_metadata WHERE gone_at IS NULL").fetchone()[0],
        "files_gone": q("SELECT count(*) FROM sync_metadata WHERE gone_at IS NOT NULL").fetchone()[0],
        "sessions": q("SELECT count(*) FROM session_stats").fetchone()[0],
        "sessions_gone": q("SELECT count(*) FROM sessions WHERE NOT file_present").fetchone()[0],
        "errors": q("SELECT count(*) FROM sync_errors").fetchone()[0],
        "line_errors": q("SELECT count(DISTINCT event_id) FROM line_errors").fetchone()[0],
    }

"""Full-text search: the index the writer keeps current, and the query that reads it.

Two FTS5 tables (migration 3, ``M003_SEARCH``), both keyed by ``events.id``:

- ``search_text``: prompts, answers and summaries, the text a person remembers. It is an
  external-content table over ``message_text`` (which the public ``messages`` view reads
  too), so the text is stored once and ``snippet()`` works.
- ``search_tools``: tool input and output, most of a transcript's bytes and noise for most
  searches, so it is searched only with ``--include-tools``. It is contentless (only the
  index is stored); its snippets are made at query time by indexing the few hits' text in
  a scratch in-memory FTS5 table and running the same MATCH there, so the highlighting is
  exactly FTS5's. Each line's tool text is capped at ``TOOL_TEXT_MAX`` characters.

The prose is stemmed (porter), the tool text is not (``TOOLS_TOKENIZE``, migration 13): the same query
finds ``running`` for ``run`` in prose, and in tool text only the word as written (or ``run*``).

The sink does its work in the batch's transaction (``Ingestor.sinks``): a line and its
index entries are committed together, so search never misses or doubles a stored line.
During a large backlog (a first sync) it stores each line's prose in ``message_text`` with the
line but leaves the indexing to ``idle``, just after the rows: the prose in bulk, one
``INSERT … SELECT`` from ``message_text`` per transaction (``search_text_pending``), then the
tool text (``search_tools_pending``). Meanwhile search finds only the lines indexed so far;
the ``messages`` view has them all.
Progress lines are not indexed: the subagent messages they embed are in the subagent's
own file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from functools import partial
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from csm.daemon import attach, heap, projects
from csm.daemon.batch import EventRow
from csm.daemon.content import strings
from csm.daemon.parse import BadLine, LineView, parse
from csm.daemon.rawtext import RAW
from csm.daemon.sinks import Sink
from csm.daemon.store import PAGE_SIZE, FileRow, Store, open_reader
from csm.shared import resume
from csm.shared.errors import QueryError
from csm.shared.protocol import Rows, Search

log = logging.getLogger("csm.search")

TOOLS_TOKENIZE = "unicode61 remove_diacritics 2"
"""Tool text is code, paths, commands and logs, where a word is looked for as it is written (``parser`` does
not find ``parsers``, ``parser*`` finds both), not stemmed (migration 13; stemming also cost 7-8 % of the
tool-text catch-up's CPU). The scratch table of tool snippets tokenizes the same way."""
TOOL_TEXT_MAX = 16 * 1024
BACKFILL_BATCH = 2000
PROSE_BATCH = 4000
"""Lines of prose indexed per transaction of the catch-up (about 2 MB of text: a hint waits at most one)."""
IDLE_PAGES = 16
"""WAL pages an idle transaction of the index writes besides its text (an estimate for the checkpoint
thread, used only when SQLite's own count cannot be read)."""
CATCH_UP_BYTES = 8 << 20
"""Line bytes read for one transaction of deferred indexing (``bounded``). Lines are read one at a time,
so what is held is their tool text (≤ this). Smaller costs CPU: FTS5 pays per transaction (the 100 MB
corpus's catch-up with 2 MB of lines and 512 KB of tool text: 25 % more CPU than with 8 MB and 2 MB)."""
CATCH_UP_TEXT = 2 << 20
"""Tool text held for one transaction of the catch-up: what it keeps until the commit."""
MARK_START, MARK_END = "\u00ab", "\u00bb"  # « », made bold on a terminal by the CLI
SNIPPET_TOKENS = 16
CANDIDATES = 1000


def extract(v: LineView, tools: bool = True) -> tuple[str | None, str, str | None]:
    """(role, prose, tool text) of a line; role None when it has nothing to index.

    With ``tools`` false the tool blocks are not read, and the tool text is None when there were any.
    """
    if v.type == "summary":
        return ("summary", v.summary, "") if v.summary else (None, "", "")
    if v.type not in ("user", "assistant") or v.message is None or v.is_meta:
        return None, "", ""
    prose: list[str] = []
    tool: list[str] = []
    skipped = False
    for b in v.blocks:
        if b.type == "text" and b.text:
            prose.append(b.text)
        elif b.type not in ("tool_use", "tool_result"):
            continue
        elif not tools:
            skipped = True
        elif b.type == "tool_use":
            tool.append(b.name or "")
            strings(b.value, tool)
        else:
            tool.append(b.output)
    text = None if skipped else "\n".join(tool)[:TOOL_TEXT_MAX]
    return v.type, "\n".join(prose), text


def bounded(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """``rows`` (an id, a line's ``raw``, …) until ``CATCH_UP_BYTES`` of lines have been read.

    A cursor is read a row at a time, so only one line is held however large the batch's lines
    are; it is closed once cut, before the batch's transaction.
    """
    read = 0
    try:
        for row in rows:
            yield row
            read += len(row[1])
            if read >= CATCH_UP_BYTES:
                break
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


class Text(NamedTuple):
    """A ``message_text`` row: one line's prose."""

    event_id: int
    session_id: str
    timestamp: str | None
    role: str
    message_id: str | None
    text: str


class SearchIndex(Sink):
    """The sink that keeps ``message_text``, ``search_text`` and ``search_tools`` current.

    ``defer`` says whether to leave the indexing of new lines to ``idle`` (while a large backlog
    is read): their prose is stored in ``message_text`` with them either way, and their tool text
    is read again then. ``prepare`` indexes the lines stored before the index existed, until ``stopping``.
    """

    name = "search"

    def __init__(self, defer: Callable[[], bool] = lambda: False,
                 stopping: threading.Event | None = None, wrote: Callable[[int], None] = lambda pages: None) -> None:
        self.defer = defer
        self.stopping = stopping or threading.Event()
        self.wrote = wrote
        """Counts the idle work's commits to the checkpoint thread, as compression's are: a 1 GB catch-up
        committed for minutes unseen, and the WAL grew to 476 MB before anything was checkpointed."""
        self.texts: list[Text] = []
        """Prose to store and index now."""
        self.texts_later: list[Text] = []
        """Prose to store now and index in ``idle``."""
        self.tools: list[tuple[int, str]] = []
        self.pending: list[tuple[int]] = []
        self.unreadable: set[str] = set()
        """Archives whose lines ``_reindex_archived`` could not read: tried again at the next start."""

    def add(self, row: EventRow, f: FileRow, view: LineView) -> None:
        later = self.defer()
        self._collect(row.id, f.session_key, view, tools=not later, index_prose=not later)

    def _collect(self, event_id: int, session_id: str, view: LineView, tools: bool = True,
                 index_prose: bool = True) -> None:
        role, prose, tool = extract(view, tools)
        if role is None:
            return
        if prose.strip():
            (self.texts if index_prose else self.texts_later).append(
                Text(event_id, session_id, view.timestamp, role, view.message.id if view.message else None, prose))
        if tool is None:
            self.pending.append((event_id,))
        elif tool.strip():
            self.tools.append((event_id, tool))

    def write(self, store: Store) -> None:
        # FTS5 flushes its pending terms whenever a rowid is not above the last one, making a segment per
        # row: the catch-up and the backfill, which read newest first, are inserted in ascending order
        # (the tool text of 100 MB: 3 times less CPU).
        self.texts.sort()
        self.tools.sort()
        conn = store.conn
        for texts in (self.texts, self.texts_later):
            if texts:
                conn.executemany("INSERT INTO message_text (event_id, session_id, timestamp, role, message_id, "
                                 "text) VALUES (?,?,?,?,?,?)", texts)
        if self.texts:
            conn.executemany("INSERT INTO search_text (rowid, text) VALUES (?,?)", [(t.event_id, t.text) for t in self.texts])
        if self.texts_later:
            conn.executemany("INSERT INTO search_text_pending (event_id) VALUES (?)",
                             [(t.event_id,) for t in self.texts_later])
        if self.tools:
            conn.executemany("INSERT INTO search_tools (rowid, text) VALUES (?,?)", self.tools)
        if self.pending:
            conn.executemany("INSERT INTO search_tools_pending (event_id) VALUES (?)", self.pending)

    def clear(self) -> None:
        self.texts.clear()
        self.texts_later.clear()
        self.tools.clear()
        self.pending.clear()

    def idle(self, store: Store, stop: Callable[[], bool]) -> None:
        """Index what a large backlog left for later, newest first, a batch per transaction, until ``stop``:
        the prose first (``_index_prose``), then the tool text (``search_tools_pending``), then the tool text
        of archived lines that migration 13 left to rebuild (``_reindex_archived``).

        Runs on the ingest thread between jobs; it yields as soon as new work waits, and the
        next round goes on where it stopped. A batch of tool text is at most ``BACKFILL_BATCH`` lines and
        ``CATCH_UP_BYTES`` of them, read one row at a time: 2,000 tool results held at once were
        30-40 MB of csmd's heap on a 1 GB history. When it is done, the heap it used is given back.
        """
        if not self._index_prose(store, stop):
            return
        done, finished = self._index_tools(store, stop, lambda: store.conn.execute(
            f"SELECT p.event_id, {RAW} FROM search_tools_pending p JOIN events e ON e.id = p.event_id "
            "ORDER BY p.event_id DESC LIMIT ?", (BACKFILL_BATCH,)),
            lambda ids: store.conn.executemany("DELETE FROM search_tools_pending WHERE event_id = ?",
                                               [(i,) for i in ids]))
        if finished:
            done += self._reindex_archived(store, stop)
        if done:
            log.info("search index: indexed the tool text of %d lines", done)
            if not stop():
                heap.release(store.conn)

    def _index_tools(self, store: Store, stop: Callable[[], bool], read: Callable[[], Iterable[tuple[Any, ...]]],
                     done: Callable[[list[int]], object]) -> tuple[int, bool]:
        """Index the tool text of the lines ``read`` gives ((id, text or None), newest first), a batch per
        transaction in which ``done`` records them; (lines read, whether ``read`` ran dry) once it does
        or ``stop``."""
        total = 0
        while not stop():
            ids: list[int] = []
            held = 0
            for event_id, raw in bounded(read()):
                if held >= CATCH_UP_TEXT:
                    break
                ids.append(event_id)
                if raw is None:  # not a message: no tool text
                    continue
                try:
                    text = extract(parse(raw.encode()))[2]
                except BadLine:
                    continue
                except Exception:  # a bug on one line must not hold up the rest of the index
                    log.exception("search index: cannot extract the tool text of line %d", event_id)
                    continue
                if text and text.strip():
                    self.tools.append((event_id, text))
                    held += len(text)
            if not ids:
                return total, True
            try:
                with store.transaction():
                    self.write(store)
                    done(ids)
            finally:
                self.clear()
            self.wrote(IDLE_PAGES + 3 * held // PAGE_SIZE)  # the index grows about 3 times the text held
            total += len(ids)
        return total, False

    def _reindex_archived(self, store: Store, stop: Callable[[], bool]) -> int:
        """The tool text of the lines in archive files (``daemon/archive.py``), for migration 13's rebuild:
        ``search_tools_archived`` lists each archive with the id below which its lines are still to do.

        The writer does not see archived lines; they are read through a reader connection, which attaches
        the archives. An archive that cannot be read is named and left for the next start."""
        todo = [name for (name,) in store.conn.execute("SELECT archive FROM search_tools_archived ORDER BY archive")
                if name not in self.unreadable]
        if not todo:
            return 0
        reader = open_reader(Path(store.conn.execute("PRAGMA main.database_list").fetchone()[2]))
        total = 0
        try:
            for name in todo:
                schema = attach.SCHEMA_PREFIX + name
                if not any(r[1] == schema for r in reader.execute("PRAGMA database_list")):
                    self.unreadable.add(name)
                    log.error("search index: archive %s cannot be read (%s): the tool text of its lines is "
                              "indexed once it can, at a later start", name, getattr(reader, "broken", {}).get(name))
                    continue
                n, finished = self._index_tools(
                    store, stop, partial(self._archived_rows, store, reader, name),
                    partial(self._archived_done, store, name))
                total += n
                if not finished:
                    break
                with store.transaction():
                    store.conn.execute("DELETE FROM search_tools_archived WHERE archive = ?", (name,))
        finally:
            reader.close()
        return total

    @staticmethod
    def _archived_rows(store: Store, reader: sqlite3.Connection, name: str) -> sqlite3.Cursor:
        """(id, text of a message or None) of archive ``name``'s next lines below its mark, newest first; a line
        also in the main file (a move undone at start) is the main file's, rebuilt from ``search_tools_pending``."""
        below = store.conn.execute("SELECT below FROM search_tools_archived WHERE archive = ?", (name,)).fetchone()[0]
        return reader.execute(
            f"SELECT e.id, CASE WHEN e.type IN ('user', 'assistant') THEN {RAW} END "
            f"FROM {attach.SCHEMA_PREFIX}{name}.events e "
            "WHERE e.id < ? AND NOT EXISTS (SELECT 1 FROM main.events x WHERE x.id = e.id) "
            "ORDER BY e.id DESC LIMIT ?", (below, BACKFILL_BATCH))

    @staticmethod
    def _archived_done(store: Store, name: str, ids: list[int]) -> None:
        store.conn.execute("UPDATE search_tools_archived SET below = ? WHERE archive = ?", (min(ids), name))

    def _index_prose(self, store: Store, stop: Callable[[], bool]) -> bool:
        """Index the prose a large backlog stored without indexing it, ``PROSE_BATCH`` lines per transaction,
        newest first; whether it is all done. SQLite alone: the text goes from ``message_text`` to FTS5
        without passing through Python."""
        conn = store.conn
        done = 0
        while not (finished := not conn.execute("SELECT 1 FROM search_text_pending LIMIT 1").fetchone()):
            if stop():
                break
            low = conn.execute("SELECT min(event_id) FROM (SELECT event_id FROM search_text_pending "
                               "ORDER BY event_id DESC LIMIT ?)", (PROSE_BATCH,)).fetchone()[0]
            with store.transaction():
                done += conn.execute(
                    "INSERT INTO search_text (rowid, text) SELECT t.event_id, t.text FROM search_text_pending p "
                    "JOIN message_text t ON t.event_id = p.event_id WHERE p.event_id >= ? ORDER BY p.event_id",
                    (low,)).rowcount
                conn.execute("DELETE FROM search_text_pending WHERE event_id >= ?", (low,))
            self.wrote(IDLE_PAGES + PROSE_BATCH // 8)
        if done:
            log.info("search index: indexed the prose of %d lines", done)
        return finished

    def prepare(self, store: Store) -> None:
        """Index the lines stored before the index existed (newest first), one transaction per batch.

        It runs on the ingest thread before the first rescan, so it stops with csmd and resumes on the next start.
        """
        done = 0
        while not self.stopping.is_set():
            row = store.conn.execute("SELECT pending_below FROM search_backfill").fetchone()
            below = row[0] if row else 0
            if not below:
                break
            rows = store.conn.execute(
                f"SELECT e.id, {RAW}, m.session_key FROM events e JOIN sync_metadata m ON m.file_id = e.file_id "
                "WHERE e.id < ? ORDER BY e.id DESC LIMIT ?", (below, BACKFILL_BATCH))
            batch = 0
            for event_id, raw, session_id in bounded(rows):
                batch, below = batch + 1, event_id
                try:
                    self._collect(event_id, session_id, parse(raw.encode()))
                except BadLine:
                    continue
                except Exception:  # a bug on one line must not hold up the rest of the index
                    log.exception("search index: cannot index line %d", event_id)
                    continue
            try:
                with store.transaction():
                    self.write(store)
                    store.conn.execute("UPDATE search_backfill SET pending_below = ?", (below if batch else 0,))
            finally:
                self.clear()
            done += batch
        if done:
            log.info("search index: indexed %d lines stored before it existed", done)


# --- queries ---------------------------------------------------------------------------

_scratch = threading.local()


def _scratch_conn() -> sqlite3.Connection:
    conn = getattr(_scratch, "conn", None)
    if conn is None:
        conn = _scratch.conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.execute(f"CREATE VIRTUAL TABLE search USING fts5(text, tokenize='{TOOLS_TOKENIZE}')")
    return conn


def _filters(req: Search, line: str = "e") -> tuple[str, list[Any]]:
    """The filters' SQL on the line's timestamp (``line``: its ``events`` or ``message_text`` row) and file."""
    sql, params = "", []
    if req.project:
        sql += " AND " + projects.sql("m.project")
        params.append(req.project)
    if req.since:
        sql += f" AND {line}.timestamp >= ?"
        params.append(req.since)
    if req.until:
        sql += f" AND {line}.timestamp < ?"
        params.append(req.until)
    return sql, params


_COLUMNS = ["session_id", "project", "timestamp", "role", "snippet", "resume", "cwd", "score"]
# CROSS JOIN keeps the FTS table the outer loop: the planner must never scan events first.
_JOIN = "CROSS JOIN events e ON e.id = s.rowid CROSS JOIN sync_metadata m ON m.file_id = e.file_id"
# A prose hit filtered by time alone needs only its message_text row (the line's timestamp, in the main
# file): no line lookup, which with archives attached would run the FTS query once per file.
_PROSE_JOIN = "CROSS JOIN message_text t ON t.event_id = s.rowid"
# A chosen hit's line and file, looked up by its id apart from its FTS query: with archives attached
# (``daemon/attach.py``) ``events`` is then probed by id in each file, not the FTS query run once per file.
_PLACE = ("SELECT m.session_key, m.project, e.timestamp, COALESCE(m.parent_session, m.session_key), "
          "(SELECT cwd FROM session_stats st WHERE st.file_id = m.file_id) "
          "FROM events e JOIN sync_metadata m ON m.file_id = e.file_id WHERE e.id = ?")


def _candidates(conn: sqlite3.Connection, table: str, req: Search) -> list[tuple[int, float]]:
    """(event id, bm25) of the ``CANDIDATES`` most recent matches that pass the filters.

    bm25 costs a few microseconds a match, so ranking every match of a common word in a
    large archive would take seconds; the most recent matches are ranked instead, which is
    exact whenever a query matches fewer lines than that, and otherwise favours recent work.
    """
    by_time = table == "search_text" and not req.project
    where, params = _filters(req, "t" if by_time else "e")
    join = "" if not where else _PROSE_JOIN if by_time else _JOIN
    sql = (f"SELECT s.rowid, bm25({table}) FROM {table} s {join} "
           f"WHERE {table} MATCH ?{where} ORDER BY s.rowid DESC LIMIT ?")
    try:
        return conn.execute(sql, [req.text, *params, CANDIDATES]).fetchall()
    except sqlite3.OperationalError as e:
        raise _search_error(req.text, str(e)) from None


def _rows(conn: sqlite3.Connection, table: str, req: Search, best: list[tuple[int, float]]) -> list[list[Any]]:
    """The result rows of the chosen hits, best first; prose hits get FTS5's snippet."""
    if not best:
        return []
    if table == "search_text":
        role = "(SELECT role FROM message_text t WHERE t.event_id = s.rowid)"
        snippet = f"snippet(search_text, 0, '{MARK_START}', '{MARK_END}', '…', {SNIPPET_TOKENS})"
    else:
        role, snippet = "'tool'", "''"  # contentless: the snippet is made by _tool_snippets
    # One statement per hit: FTS5 seeks straight to a rowid given with '=', not with IN.
    sql = f"SELECT {role}, {snippet} FROM {table} s WHERE {table} MATCH ? AND s.rowid = ?"
    found = {}
    for i, _ in best:
        place = conn.execute(_PLACE, (i,)).fetchone()
        hit = conn.execute(sql, (req.text, i)).fetchone() if place else None
        found[i] = (*place[:3], *hit, *place[3:]) if place and hit else None
    rows = [[*found[i], score] for i, score in best if found[i]]
    for r in rows:  # the resume line, from the session to resume and its cwd
        r[5] = resume.command(r[5], r[6])
    if table == "search_tools":
        _tool_snippets(conn, rows, [i for i, _ in best if found[i]], req.text)
    return rows


def _search_error(text: str, message: str) -> QueryError:
    """An error of a MATCH is the query's fault (the SQL around it is csm's): say how to write it."""
    if message == "interrupted":
        return QueryError("search stopped at its time limit; make it more specific")
    detail = message.removeprefix("fts5: ")
    return QueryError(
        f"search syntax error in {text!r}: {detail}. Words are ANDed; use OR, NOT, \"exact phrase\", prefix*; "
        "quote anything with punctuation, e.g. '\"foo-bar.py\"'"
    )


def _tool_snippets(conn: sqlite3.Connection, rows: list[list[Any]], ids: list[int], query: str) -> None:
    """Fill in each tool hit's snippet, from its tool text indexed in a scratch table."""
    if not rows:
        return
    raws = dict(conn.execute(f"SELECT e.id, {RAW} FROM events e WHERE e.id IN ({','.join('?' * len(ids))})", ids))
    scratch = _scratch_conn()
    scratch.execute("DELETE FROM search")
    docs = []
    for i in ids:
        try:
            docs.append((i, extract(parse(raws[i].encode()))[2] or ""))
        except (BadLine, KeyError):
            continue
    scratch.executemany("INSERT INTO search (rowid, text) VALUES (?,?)", docs)
    snippets = dict(scratch.execute(
        f"SELECT rowid, snippet(search, 0, '{MARK_START}', '{MARK_END}', '…', {SNIPPET_TOKENS}) "
        "FROM search WHERE search MATCH ?", (query,)))
    for r, i in zip(rows, ids):
        r[4] = snippets.get(i, "")


def _as_words(text: str) -> str:
    """Each whitespace-separated word as an FTS5 string: ``phx.server`` then finds the words phx server."""
    return " ".join('"' + w.replace('"', '""') + '"' for w in text.split())


def search(conn: sqlite3.Connection, req: Search) -> Rows:
    """The best ``limit`` hits by bm25; with tools, the two tables' candidates ranked together.

    ``text`` is an FTS5 query. When it is not valid FTS5 and uses no quotes (``phx.server``,
    ``foo-bar``), it is read as plain words instead, which is what such a search means.
    """
    if not req.text.strip():
        raise QueryError("nothing to search for")
    try:
        found = {"search_text": _candidates(conn, "search_text", req)}
    except QueryError:
        if '"' in req.text:
            raise
        req = msgspec.structs.replace(req, text=_as_words(req.text))  # plain words are always valid FTS5
        found = {"search_text": _candidates(conn, "search_text", req)}
    if req.include_tools:
        found["search_tools"] = _candidates(conn, "search_tools", req)
    ranked = sorted(((score, table, i) for table, hits in found.items() for i, score in hits))[: req.limit]
    rows: list[list[Any]] = []
    for table in found:
        rows += _rows(conn, table, req, [(i, score) for score, t, i in ranked if t == table])
    rows.sort(key=lambda r: r[-1])
    for r in rows:
        r[-1] = round(-r[-1], 3)  # bm25 is lower-is-better; show higher-is-better
    return Rows(columns=_COLUMNS, rows=rows)

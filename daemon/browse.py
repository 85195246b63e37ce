"""Reports for browsing the archive: the sessions list and one session's conversation.

These run on the query pool's read-only connections, each statement under a time limit.
Tokens and cost come from the public ``usage`` view (the usage sink keeps it).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from csm.daemon import projects
from csm.daemon.transcript import build
from csm.shared.errors import NotFound, QueryError
from csm.shared.protocol import Entry, Rows, SessionInfo, Sessions, Show, Transcript

TIME_LIMIT_S = 10.0
CANDIDATES_SHOWN = 10


class time_limit:
    """Stop a statement that runs past ``seconds`` (SQLite reports it as 'interrupted')."""

    def __init__(self, conn: sqlite3.Connection, seconds: float = TIME_LIMIT_S) -> None:
        self.conn = conn
        self.deadline = time.monotonic() + seconds

    def __enter__(self) -> None:
        self.conn.set_progress_handler(lambda: int(time.monotonic() > self.deadline), 10_000)

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        self.conn.set_progress_handler(None, 0)
        if isinstance(e, sqlite3.OperationalError) and str(e) == "interrupted":
            raise QueryError(f"stopped after the {TIME_LIMIT_S:g} s time limit; ask for less") from None


# A session's tokens and cost from the public ``usage`` view (indexed by session), its
# subagents' included. Cost is NULL when any response is unpriced: never a silent partial sum.
_USAGE_SCOPE = ("FROM usage u WHERE u.session_id IN (SELECT s.session_id UNION ALL "
                "SELECT c.session_id FROM session_stats c WHERE c.parent_session_id = s.session_id)")
_TOKENS = ("(SELECT sum(u.input_tokens + u.output_tokens + u.cache_creation_tokens + u.cache_read_tokens) "
           f"{_USAGE_SCOPE})")
_COST = f"(SELECT CASE WHEN count(*) = count(u.cost_usd) THEN sum(u.cost_usd) END {_USAGE_SCOPE})"


SESSION_COLUMNS = ["session_id", "project", "title", "started", "last_activity", "messages", "tokens", "cost_usd",
                   "file_present"]


def sessions(conn: sqlite3.Connection, req: Sessions) -> Rows:
    """Main sessions (and subagents whose parent csm never saw), most recent activity first."""
    where = ["(NOT s.is_subagent OR NOT EXISTS (SELECT 1 FROM session_stats p WHERE p.session_id = s.parent_session_id))"]
    params: list[Any] = []
    if req.project:
        where.append(projects.sql("s.project"))
        params.append(req.project)
    if req.since:
        where.append("s.last_activity >= ?")
        params.append(req.since)
    if req.until:
        where.append("s.started < ?")
        params.append(req.until)
    for word in (req.title or "").split():
        where.append("instr(lower(s.title), ?) > 0")
        params.append(word.lower())
    sql = (f"SELECT s.session_id, s.project, s.title, s.started, s.last_activity, s.messages, {_TOKENS}, {_COST}, "
           f"s.file_present FROM sessions s WHERE {' AND '.join(where)} ORDER BY s.last_activity DESC LIMIT ? OFFSET ?")
    with time_limit(conn):
        rows = conn.execute(sql, [*params, req.limit, req.offset]).fetchall()
    return Rows(columns=SESSION_COLUMNS, rows=[list(r) for r in rows])


def resolve(conn: sqlite3.Connection, prefix: str) -> str:
    """The session whose id is ``prefix`` or starts with it (as git takes short hashes).

    A subagent may be named without its ``agent-`` prefix.
    """
    prefix = prefix.strip()
    if not prefix:
        raise QueryError("no session given")
    for p in (prefix, f"agent-{prefix}"):
        if conn.execute("SELECT 1 FROM session_stats WHERE session_id = ?", (p,)).fetchone():
            return p
        found = [r[0] for r in conn.execute(
            "SELECT session_id FROM session_stats WHERE session_id > ? AND session_id < ? ORDER BY session_id LIMIT ?",
            (p, p + "\U0010ffff", CANDIDATES_SHOWN + 1))]
        if len(found) == 1:
            return found[0]
        if found:
            more = ", …" if len(found) > CANDIDATES_SHOWN else ""
            raise QueryError(f"session prefix {prefix!r} is ambiguous; it matches "
                             f"{', '.join(found[:CANDIDATES_SHOWN])}{more}")
    raise NotFound(f"no session matches {prefix!r} (csm query sessions lists them)")


def session_info(conn: sqlite3.Connection, session_id: str) -> SessionInfo:
    r = conn.execute(
        "SELECT session_id, project, title, cwd, started, last_activity, messages, parent_session_id, file_present "
        "FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    if r is None:
        raise NotFound(f"no session {session_id!r}")
    resume = r[7] if r[7] else r[0]
    return SessionInfo(session_id=r[0], project=r[1], title=r[2], cwd=r[3], started=r[4], last_activity=r[5],
                       messages=r[6], parent_session_id=r[7], file_present=bool(r[8]),
                       resume=f"claude --resume {resume}")


def _lines(conn: sqlite3.Connection, session_id: str) -> Iterator[str]:
    """The session's lines in the order csm stored them (file order; lines a rewrite removed stay)."""
    for (raw,) in conn.execute(
        "SELECT e.raw FROM sync_metadata m JOIN events e ON e.file_id = m.file_id WHERE m.session_key = ? "
        "ORDER BY e.file_id, e.id", (session_id,)):
        yield raw


def _entries(conn: sqlite3.Connection, session_id: str, full: bool, depth: int, children: dict[str, str | None],
             seen: set[str]) -> list[Entry]:
    """A session's entries, each subagent it spawned nested right after the call that spawned it."""
    b = build(_lines(conn, session_id), full, depth)
    out = list(b.entries)
    for index, agent in sorted(b.spawned, reverse=True):
        key = f"agent-{agent}"
        if key in children and key not in seen:
            seen.add(key)
            nested = _entries(conn, key, full, depth + 1, children, seen)
            out[index + 1 : index + 1] = [Entry(kind="subagent", session_id=key, text=children[key] or "",
                                                depth=depth), *nested]
    return out


def show(conn: sqlite3.Connection, req: Show) -> Transcript:
    with time_limit(conn):
        session_id = resolve(conn, req.session)
        info = session_info(conn, session_id)
        children: dict[str, str | None] = dict(conn.execute(
            "SELECT session_id, title FROM sessions WHERE parent_session_id = ? ORDER BY started", (session_id,)))
        seen: set[str] = set()
        entries = _entries(conn, session_id, req.full, 0, children, seen)
        for key, title in children.items():  # subagents no call in the parent names
            if key not in seen:
                entries.append(Entry(kind="subagent", session_id=key, text=title or "", depth=0))
                entries += _entries(conn, key, req.full, 1, children, seen | {key})
    return Transcript(session=info, entries=entries)

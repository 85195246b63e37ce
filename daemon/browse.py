"""Reports for browsing the archive: the sessions list and one session's conversation.

These run on the query pool's read-only connections, under the time limit ``app.ROUTES`` gives them.
Tokens and cost come from the public ``usage`` view (the usage sink keeps it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any, NamedTuple

from csm.daemon import projects
from csm.daemon.conversation import build
from csm.daemon.tree import AGENT_PREFIX
from csm.shared.errors import NotFound, QueryError
from csm.shared.protocol import Entry, Rows, SessionInfo, Sessions, Show, Transcript

CANDIDATES_SHOWN = 10


# A session's tokens and cost from the public ``usage`` view (indexed by session), its
# subagents' included. Cost is NULL when any response is unpriced: never a silent partial sum.
# Usage rows name the session and project where the counted copy was found.
_USAGE_SCOPE = ("FROM usage u WHERE u.session_id IN (SELECT s.session_id UNION ALL SELECT c.session_id "
                "FROM session_stats c WHERE c.parent_session_id = s.session_id AND c.project = s.project) "
                "AND u.project = s.project")
_TOKENS = ("(SELECT sum(u.input_tokens + u.output_tokens + u.cache_creation_tokens + u.cache_read_tokens) "
           f"{_USAGE_SCOPE})")
_COST = f"(SELECT CASE WHEN count(*) = count(u.cost_usd) THEN sum(u.cost_usd) END {_USAGE_SCOPE})"


SESSION_COLUMNS = ["session_id", "project", "title", "started", "last_activity", "messages", "tokens", "cost_usd",
                   "file_present"]


def sessions(conn: sqlite3.Connection, req: Sessions) -> Rows:
    """Main sessions (and subagents whose parent csm never saw), most recent activity first."""
    where = ["(NOT s.is_subagent OR NOT EXISTS (SELECT 1 FROM session_stats p WHERE p.session_id = "
             "s.parent_session_id AND p.project = s.project))"]
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
    rows = conn.execute(sql, [*params, req.limit, req.offset]).fetchall()
    return Rows(columns=SESSION_COLUMNS, rows=[list(r) for r in rows])


def _one(what: str, rows: list[tuple[int, str]]) -> int:
    """The one session file of ``rows`` (file_id, path); several are refused with their paths."""
    if len(rows) == 1:
        return rows[0][0]
    paths = [p for _, p in rows[:CANDIDATES_SHOWN]]
    more = ", …" if len(rows) > CANDIDATES_SHOWN else ""
    raise QueryError(f"session {what} is ambiguous: it is in {len(rows)} places (a copied project folder, two "
                     f"roots, subagents of different sessions); name one by its transcript's path: "
                     f"{', '.join(paths)}{more}")


def _in_places(conn: sqlite3.Connection, session_id: str) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT s.file_id, m.file_path FROM session_stats s JOIN sync_metadata m ON m.file_id = s.file_id "
        "WHERE s.session_id = ? ORDER BY m.file_path", (session_id,)).fetchall()


def resolve(conn: sqlite3.Connection, target: str) -> int:
    """The session (its file's id) that ``target`` names: a transcript's path, a session id, or the
    start of one (as git takes short hashes). A subagent may be named without its ``agent-`` prefix.

    A session lives somewhere: an id found in several places (a copied project folder, both roots,
    two subagents with one short id) is refused with their paths, as an ambiguous prefix is.
    """
    target = target.strip()
    if not target:
        raise QueryError("no session given")
    if target.startswith("/"):
        row = conn.execute(
            "SELECT s.file_id FROM sync_metadata m JOIN session_stats s ON s.file_id = m.file_id "
            "WHERE m.file_path = ? ORDER BY m.gone_at IS NOT NULL, m.gone_at DESC LIMIT 1", (target,)).fetchone()
        if row is None:
            raise NotFound(f"no session in the archive is the transcript {target}")
        return row[0]
    for p in (target, AGENT_PREFIX + target):
        if places := _in_places(conn, p):
            return _one(repr(target), places)
        found = [r[0] for r in conn.execute(
            "SELECT DISTINCT session_id FROM session_stats WHERE session_id > ? AND session_id < ? "
            "ORDER BY session_id LIMIT ?", (p, p + "\U0010ffff", CANDIDATES_SHOWN + 1))]
        if len(found) == 1:
            return _one(f"{found[0]!r} (from {target!r})", _in_places(conn, found[0]))
        if found:
            more = ", …" if len(found) > CANDIDATES_SHOWN else ""
            raise QueryError(f"session prefix {target!r} is ambiguous; it matches "
                             f"{', '.join(found[:CANDIDATES_SHOWN])}{more}")
    raise NotFound(f"no session matches {target!r} (csm query sessions lists them)")


class Place(NamedTuple):
    """Where a session lives: its file, and what its subagents' files carry to name it."""

    file_id: int
    session_id: str
    project: str
    root: str


def place(conn: sqlite3.Connection, file_id: int) -> Place:
    r = conn.execute("SELECT s.file_id, s.session_id, s.project, m.root FROM session_stats s "
                     "JOIN sync_metadata m ON m.file_id = s.file_id WHERE s.file_id = ?", (file_id,)).fetchone()
    if r is None:
        raise NotFound("the session left the archive")
    return Place(*r)


def session_info(conn: sqlite3.Connection, file_id: int) -> SessionInfo:
    r = conn.execute(
        "SELECT s.session_id, s.project, COALESCE(s.custom_title, s.ai_title, s.summary, s.first_prompt), s.cwd, "
        "s.first_ts, s.last_ts, s.messages, s.parent_session_id, m.gone_at IS NULL "
        "FROM session_stats s JOIN sync_metadata m ON m.file_id = s.file_id WHERE s.file_id = ?",
        (file_id,)).fetchone()
    if r is None:
        raise NotFound("the session left the archive")
    resume = r[7] if r[7] else r[0]
    return SessionInfo(session_id=r[0], project=r[1], title=r[2], cwd=r[3], started=r[4], last_activity=r[5],
                       messages=r[6], parent_session_id=r[7], file_present=bool(r[8]),
                       resume=f"claude --resume {resume}")


def _lines(conn: sqlite3.Connection, file_id: int) -> Iterator[str]:
    """The session's lines in the order csm stored them (file order; lines a rewrite removed stay)."""
    for (raw,) in conn.execute("SELECT raw FROM events WHERE file_id = ? ORDER BY id", (file_id,)):
        yield raw


Children = dict[str, tuple[int, str | None]]
"""A session's subagents: session id -> (file id, title)."""


def _entries(conn: sqlite3.Connection, file_id: int, full: bool, depth: int, children: Children,
             seen: set[str]) -> list[Entry]:
    """A session's entries, each subagent it spawned nested right after the call that spawned it."""
    b = build(_lines(conn, file_id), full, depth)
    out = list(b.entries)
    for index, agent in sorted(b.spawned, reverse=True):
        key = AGENT_PREFIX + agent
        if key in children and key not in seen:
            seen.add(key)
            child, title = children[key]
            nested = _entries(conn, child, full, depth + 1, children, seen)
            out[index + 1 : index + 1] = [Entry(kind="subagent", session_id=key, text=title or "",
                                                depth=depth), *nested]
    return out


def show(conn: sqlite3.Connection, req: Show) -> Transcript:
    p = place(conn, resolve(conn, req.session))
    info = session_info(conn, p.file_id)
    children: Children = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT c.session_id, c.file_id, COALESCE(c.custom_title, c.ai_title, c.summary, c.first_prompt) "
        "FROM session_stats c JOIN sync_metadata m ON m.file_id = c.file_id WHERE c.parent_session_id = ? "
        "AND c.project = ? AND m.root = ? ORDER BY c.first_ts", (p.session_id, p.project, p.root))}
    seen: set[str] = set()
    entries = _entries(conn, p.file_id, req.full, 0, children, seen)
    for key, (child, title) in children.items():  # subagents no call in the parent names
        if key not in seen:
            entries.append(Entry(kind="subagent", session_id=key, text=title or "", depth=0))
            entries += _entries(conn, child, req.full, 1, children, seen | {key})
    return Transcript(session=info, entries=entries)

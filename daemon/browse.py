"""Reports for browsing the archive: the sessions list and one session's conversation.

These run on the query pool's read-only connections, under the time limit ``app.ROUTES`` gives them,
but a whole conversation, which streams to its client under flow control on a thread of its own.
Tokens and cost come from the public ``usage`` view (the usage sink keeps it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from csm.daemon import attach, projects
from csm.daemon.conversation import Builder
from csm.daemon.rawtext import RAW_BYTES
from csm.daemon.tree import AGENT_PREFIX
from csm.shared import resume
from csm.shared.errors import NotFound, QueryError
from csm.shared.protocol import Entry, Heartbeat, Message, Messages, Rows, SessionInfo, Sessions, Show, Transcript

if TYPE_CHECKING:
    from csm.daemon.export import Flow

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
# The models that answered (Claude Code's own "<synthetic>" placeholder left out), by name.
_MODELS = (f"(SELECT group_concat(m, ', ') FROM (SELECT DISTINCT u.model AS m {_USAGE_SCOPE} "
           "AND u.model NOT LIKE '<%' ORDER BY u.model))")
_SUBAGENTS = ("(SELECT count(*) FROM session_stats c WHERE c.parent_session_id = s.session_id "
              "AND c.project = s.project)")


SESSION_COLUMNS = ["session_id", "project", "title", "started", "last_activity", "messages", "tokens", "cost_usd",
                   "file_present", "models", "subagents", "cwd", "resume"]


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
           f"s.file_present, {_MODELS}, {_SUBAGENTS}, s.cwd, COALESCE(s.parent_session_id, s.session_id) "
           f"FROM sessions s WHERE {' AND '.join(where)} ORDER BY s.last_activity DESC LIMIT ? OFFSET ?")
    rows = conn.execute(sql, [*params, req.limit, req.offset]).fetchall()
    return Rows(columns=SESSION_COLUMNS, rows=[[*r[:-1], resume.command(r[-1], r[-2])] for r in rows])


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


_CHILDREN = ("FROM session_stats c JOIN sync_metadata m ON m.file_id = c.file_id WHERE c.parent_session_id = ? "
             "AND c.project = ? AND m.root = ?")
"""A session's subagents: the sessions naming it as their parent in the same project and root."""


def subagent_files(conn: sqlite3.Connection, file_id: int) -> list[tuple[int, str]]:
    """(file_id, path) of the subagents of the session in file ``file_id``, by path; none for a file
    that holds no session."""
    try:
        p = place(conn, file_id)
    except NotFound:
        return []
    return conn.execute(f"SELECT c.file_id, m.file_path {_CHILDREN} ORDER BY m.file_path",
                        (p.session_id, p.project, p.root)).fetchall()


def session_info(conn: sqlite3.Connection, file_id: int) -> SessionInfo:
    r = conn.execute(
        "SELECT s.session_id, s.project, COALESCE(s.custom_title, s.ai_title, s.summary, s.first_prompt), s.cwd, "
        "s.first_ts, s.last_ts, s.messages, s.parent_session_id, m.gone_at IS NULL "
        "FROM session_stats s JOIN sync_metadata m ON m.file_id = s.file_id WHERE s.file_id = ?",
        (file_id,)).fetchone()
    if r is None:
        raise NotFound("the session left the archive")
    session_id, project, title, cwd, started, last_activity, messages, parent, present = r
    return SessionInfo(session_id=session_id, project=project, title=title, cwd=cwd, started=started,
                       last_activity=last_activity, messages=messages, parent_session_id=parent,
                       file_present=bool(present), resume=resume.command(parent or session_id, cwd))


def _lines(conn: sqlite3.Connection, file_id: int) -> Iterator[bytes]:
    """The session's lines in the order csm stored them (file order; lines a rewrite removed stay), as the
    bytes the decoder takes (``RAW_BYTES``: a compressed line is not made a str and encoded back)."""
    attach.readable(conn, file_id)
    for (raw,) in conn.execute(f"SELECT {RAW_BYTES} FROM events e WHERE e.file_id = ? ORDER BY e.id", (file_id,)):
        yield raw


Children = dict[str, tuple[int, str | None]]
"""A session's subagents: session id -> (file id, title)."""


PAGE_SLACK = 100
"""Entries read past a page that does not need the rest of the session: one that ends within them is
``complete`` (its total known) and the web page says so; one that goes on is left unread."""
MESSAGE_BYTES = 128 << 10
"""About what one ``Messages`` of a streamed conversation carries (an entry bigger than that goes alone)."""


def _entries(conn: sqlite3.Connection, file_id: int, full: bool, depth: int, children: Children,
             seen: set[str]) -> Iterator[Entry]:
    """A session's entries as they settle (``conversation.Builder``), each subagent it spawned nested right
    after the call that spawned it (the first call that names it): a conversation holds only its open
    entries, whatever its length."""
    b = Builder(full, depth)

    def settled() -> Iterator[Entry]:
        for e, agent in b.settled():
            yield e
            key = AGENT_PREFIX + agent if agent else ""
            if key in children and key not in seen:
                seen.add(key)
                child, title = children[key]
                yield Entry(kind="subagent", session_id=key, text=title or "", depth=depth)
                yield from _entries(conn, child, full, depth + 1, children, seen)

    for raw in _lines(conn, file_id):
        b.add_raw(raw)
        yield from settled()
    b.finish()
    yield from settled()


def conversation(conn: sqlite3.Connection, p: Place, full: bool) -> Iterator[Entry]:
    """The whole conversation of the session at ``p``, in order: its entries with their subagents nested,
    then the subagents no call in it names, each after a header."""
    children: Children = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT c.session_id, c.file_id, COALESCE(c.custom_title, c.ai_title, c.summary, c.first_prompt) "
        f"{_CHILDREN} ORDER BY c.first_ts", (p.session_id, p.project, p.root))}
    seen: set[str] = set()
    yield from _entries(conn, p.file_id, full, 0, children, seen)
    for key, (child, title) in children.items():
        if key not in seen:
            seen.add(key)
            yield Entry(kind="subagent", session_id=key, text=title or "", depth=0)
            yield from _entries(conn, child, full, 1, children, seen)


def _preferred(e: Entry) -> bool:
    """A search hit opens on a prompt or answer of its time rather than any other entry of it."""
    return e.kind in ("user", "assistant")


def show(conn: sqlite3.Connection, req: Show) -> Transcript:
    """One page of the conversation: ``req.limit`` entries from ``req.offset``, or the page holding the
    entry ``req.at`` names, or (an offset past the end) the last page. Only the pages that may be the
    answer are kept (the one at ``offset``, the page being read, the hit's), never the conversation.
    A page with no ``at`` is read only ``PAGE_SLACK`` entries past its end (``complete`` false when the
    session goes on), so a long session's first screen comes fast; otherwise all are counted."""
    assert req.limit is not None, "a Show without a limit streams (app.STREAMED_SHOW)"
    limit, offset = req.limit, req.offset
    p = place(conn, resolve(conn, req.session))
    info = session_info(conn, p.file_id)
    window: list[Entry] = []  # the entries from ``offset``
    page: list[Entry] = []  # the page being read (the last one, at the end)
    found: tuple[int, list[Entry]] | None = None  # the hit so far (an entry of its time) and its page
    total, complete = 0, True
    for i, e in enumerate(conversation(conn, p, req.full)):
        if i % limit == 0:
            page = []
        page.append(e)
        if offset <= i < offset + limit:
            window.append(e)
        if req.at is not None and e.timestamp == req.at and (found is None or _preferred(e) and not
                                                             _preferred(found[1][found[0] % limit])):
            found = (i, page)
        total = i + 1
        if req.at is None and total > offset + limit + PAGE_SLACK:
            complete = False
            break
    hit = found[0] if found else None
    if found is not None:
        offset, window = found[0] - found[0] % limit, found[1]
    elif total and offset >= total:  # past the end: the last page
        offset, window = (total - 1) - (total - 1) % limit, page
    return Transcript(session=info, entries=window, offset=offset, total=total, hit=hit, complete=complete)


def _size(e: Entry) -> int:
    """About what ``e`` weighs in a message: its texts and pictures."""
    texts = (e.text, e.input, e.output, e.thinking, e.detail)
    return 200 + sum(len(t) for t in texts if t) + sum(len(i.data) for i in e.images)


def stream(conn: sqlite3.Connection, req: Show, reply: Callable[[Message], None], flow: Flow) -> Transcript:
    """The whole conversation (``Show.stream``) as ``Messages`` of about ``MESSAGE_BYTES`` each, sent as
    ``flow`` allows (an export's flow control: a client that stops reading holds up its stream, not
    csmd's memory), then the ``Transcript`` that ends it: the session and the count, no entries. An older
    csm, which asks for it all in one reply, is told to upgrade: that reply is what took csmd's memory."""
    if not req.stream:
        raise QueryError("this csm is older than csmd: a whole conversation now comes as a stream; upgrade csm "
                         "(or restart csmd, if it is the older one)")
    p = place(conn, resolve(conn, req.session))
    info = session_info(conn, p.file_id)
    batch: list[Entry] = []
    size = seq = total = 0
    for e in conversation(conn, p, req.full):
        batch.append(e)
        size += _size(e)
        total += 1
        if size >= MESSAGE_BYTES:
            flow.wait(seq, lambda: reply(Heartbeat()))
            reply(Messages(entries=batch, seq=seq))
            batch, size, seq = [], 0, seq + 1
    if batch:
        flow.wait(seq, lambda: reply(Heartbeat()))
        reply(Messages(entries=batch, seq=seq))
    return Transcript(session=info, entries=[], total=total)

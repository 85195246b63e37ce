"""One batch of the mirror: the shared rows of a range of local lines, read from SQLite, upserted into PostgreSQL.

A batch is the lines ``(low, high]`` of ``events.id`` (ids only grow: one writer appends them in
order, so every line up to the newest one seen is committed) and what derives from them: the usage
rows whose counted copy is one of those lines (a better copy of a response is a newer line, so
it comes in a later batch and replaces the row), the sessions of the files those lines belong to
(their figures as they are now), and with ``transcripts`` the lines themselves and their prose.

Every statement is an upsert keyed by member, machine and local identity, so sending a batch
twice stores it once: the mirror can always re-send after any failure instead of having to know
what PostgreSQL kept.
"""

from __future__ import annotations

import fnmatch
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from csm.daemon.rawtext import RAW
from csm.shared.config import Team

if TYPE_CHECKING:
    import psycopg

MAX_BATCH_BYTES = 256 * 1024
"""Line text per batch (share = transcripts): bounds csmd's memory whatever ``batch_rows`` says."""
LONG_VALUE = MAX_BATCH_BYTES
"""A line or prose longer than a whole batch's text: after sending it, the mirror starts a new connection
(libpq's buffers stay as large as the largest message ever sent on one: ``Mirror._step``)."""

LEVELS = {"usage": 0, "sessions": 1, "transcripts": 2}


@dataclass
class Batch:
    low: int
    high: int
    usage: list[tuple[Any, ...]] = field(default_factory=list)
    sessions: list[tuple[Any, ...]] = field(default_factory=list)
    lines: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    longest: int = 0
    """The longest line or prose text in the batch, in characters."""

    @property
    def rows(self) -> int:
        return len(self.usage) + len(self.sessions) + len(self.lines) + len(self.messages)


class Projects:
    """``include``/``exclude`` globs on the project folder name, ignoring case; answers cached per name."""

    def __init__(self, team: Team) -> None:
        self.include = [p.lower() for p in team.include]
        self.exclude = [p.lower() for p in team.exclude]
        self.seen: dict[str, bool] = {}

    def __call__(self, project: str) -> bool:
        ok = self.seen.get(project)
        if ok is None:
            name = project.lower()
            ok = self.seen[project] = (any(fnmatch.fnmatchcase(name, p) for p in self.include)
                                       and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude))
        return ok


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(s: str | None) -> str | None:
    """Text PostgreSQL accepts: no NUL, valid UTF-8 (a JSON string may hold a lone surrogate, the one
    thing UTF-8 cannot encode). Checked without encoding: a copy of each line only to look at it was
    a line's worth of csmd's peak."""
    if s is None:
        return None
    if "\x00" in s:
        s = s.replace("\x00", "\ufffd")
    if not s.isascii() and _SURROGATE.search(s):
        s = s.encode("utf-8", "replace").decode()
    return s


def _at(ts: str | None) -> datetime | None:
    """A timestamp as written, or None when it is not one (a bad value must not stop the mirror)."""
    if not ts:
        return None
    try:
        at = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return at if at.tzinfo else None


def read(conn: sqlite3.Connection, low: int, team: Team, shared: Projects, archive: str) -> Batch | None:
    """The batch after ``low`` (None when there is no new line), read in one snapshot."""
    level = LEVELS[team.share]
    conn.execute("BEGIN")
    try:
        head = conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0
        if head <= low:
            return None
        high = min(head, low + team.batch_rows)
        b = Batch(low, high)
        if level >= LEVELS["transcripts"]:
            size = 0
            for row in conn.execute(
                    f"SELECT e.id, e.file_id, e.session_id, m.project, e.type, e.timestamp, {RAW} FROM events e "
                    "JOIN sync_metadata m ON m.file_id = e.file_id WHERE e.id > ? AND e.id <= ? ORDER BY e.id",
                    (low, high)):
                if shared(row[3]):
                    b.lines.append((archive, row[0], row[1], row[2], row[3], row[4], _at(row[5]), _text(row[6])))
                    size += len(row[6])
                    b.longest = max(b.longest, len(row[6]))
                if size >= MAX_BATCH_BYTES:
                    b.high = high = row[0]
                    break
            b.messages = [
                (archive, r[0], r[1], r[2], r[3], _at(r[4]), _text(r[5]))
                for r in conn.execute(
                    "SELECT t.event_id, t.session_id, m.project, t.role, t.timestamp, t.text FROM message_text t "
                    "JOIN events e ON e.id = t.event_id JOIN sync_metadata m ON m.file_id = e.file_id "
                    "WHERE t.event_id > ? AND t.event_id <= ?", (low, high))
                if shared(r[2])]
            b.longest = max([b.longest, *(len(m[6] or "") for m in b.messages)])
        b.usage = [
            (r[0], r[1], r[2], datetime.fromtimestamp(r[3] / 1000, tz=UTC), *r[4:15], bool(r[15]))
            for r in conn.execute(
                "SELECT key, session_id, project, ts, model, input_tokens, output_tokens, cache_creation_tokens, "
                "cache_read_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, cost_usd, speed, message_id, "
                "request_id, sidechain FROM usage_entries WHERE event_id > ? AND event_id <= ?", (low, high))
            if shared(r[2])]
        if level >= LEVELS["sessions"]:
            b.sessions = [
                (archive, r[0], r[1], r[2], r[3], bool(r[4]), _text(r[5]), _at(r[6]), _at(r[7]), r[8], r[9],
                 _text(r[10]), r[11])
                for r in conn.execute(
                    "SELECT s.file_id, s.session_id, s.project, s.parent_session_id, s.is_subagent, s.cwd, s.first_ts, "
                    "s.last_ts, s.lines, s.messages, COALESCE(s.custom_title, s.ai_title, s.summary, s.first_prompt), "
                    "(SELECT group_concat(model, ',') FROM session_models sm WHERE sm.file_id = s.file_id) "
                    "FROM session_stats s WHERE s.file_id IN "
                    "(SELECT DISTINCT file_id FROM events WHERE id > ? AND id <= ?)", (low, high))
                if shared(r[2])]
        return b
    finally:
        conn.execute("COMMIT")

_UPSERT_USAGE = """
INSERT INTO csm.usage (member, machine, key, session_id, project, at, model, input_tokens, output_tokens,
    cache_creation_tokens, cache_read_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, cost_usd, speed,
    message_id, request_id, sidechain)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (member, machine, key) DO UPDATE SET session_id = EXCLUDED.session_id, project = EXCLUDED.project,
    at = EXCLUDED.at, model = EXCLUDED.model, input_tokens = EXCLUDED.input_tokens,
    output_tokens = EXCLUDED.output_tokens, cache_creation_tokens = EXCLUDED.cache_creation_tokens,
    cache_read_tokens = EXCLUDED.cache_read_tokens, cache_creation_5m_tokens = EXCLUDED.cache_creation_5m_tokens,
    cache_creation_1h_tokens = EXCLUDED.cache_creation_1h_tokens, cost_usd = EXCLUDED.cost_usd,
    speed = EXCLUDED.speed, message_id = EXCLUDED.message_id, request_id = EXCLUDED.request_id,
    sidechain = EXCLUDED.sidechain
"""

_UPSERT_SESSIONS = """
INSERT INTO csm.sessions (member, machine, archive, file_id, session_id, project, parent_session_id, is_subagent,
    cwd, started, last_activity, lines, messages, title, models)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (member, machine, archive, file_id) DO UPDATE SET session_id = EXCLUDED.session_id,
    project = EXCLUDED.project, parent_session_id = EXCLUDED.parent_session_id, is_subagent = EXCLUDED.is_subagent,
    cwd = EXCLUDED.cwd, started = EXCLUDED.started, last_activity = EXCLUDED.last_activity, lines = EXCLUDED.lines,
    messages = EXCLUDED.messages, title = EXCLUDED.title, models = EXCLUDED.models
"""

# A line's bytes never change under its id (a re-read re-attaches the same bytes), so a copy is skipped.
_INSERT_LINES = """
INSERT INTO csm.lines (member, machine, archive, event_id, file_id, session_id, project, type, at, raw)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""

_INSERT_MESSAGES = """
INSERT INTO csm.messages (member, machine, archive, event_id, session_id, project, role, at, text)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


def send(pg: psycopg.Connection, b: Batch, team: Team) -> None:
    """Upsert the batch in one PostgreSQL transaction: all of it is committed, or none."""
    who = (team.member, team.machine)
    with pg.transaction(), pg.cursor() as cur:
        for statement, rows in ((_UPSERT_USAGE, b.usage), (_UPSERT_SESSIONS, b.sessions),
                                (_INSERT_LINES, b.lines), (_INSERT_MESSAGES, b.messages)):
            if rows:
                cur.executemany(statement, [(*who, *r) for r in rows])

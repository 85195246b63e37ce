"""The database schema, as numbered migrations.

Append only: a migration that has shipped is never edited; a change is a new one.
Each runs in one transaction together with the row that records it, so a crash
mid-migration leaves the database at the previous version. ``PRAGMA user_version``
mirrors the count so a database written by a newer csm is recognised and refused.
"""

from __future__ import annotations

M001_INITIAL = """
-- One row per transcript file ever seen: the checkpoint (last_position, committed in the
-- same transaction as the rows it covers) and the identity used to tell an append from a
-- truncation, a replacement or a rename. file_id is what rows point to, so a rename only
-- touches this table.
CREATE TABLE sync_metadata (
    file_path TEXT PRIMARY KEY,
    last_position INTEGER NOT NULL,
    last_modified TEXT NOT NULL,
    last_synced_at TEXT NOT NULL,
    file_id INTEGER NOT NULL UNIQUE,
    root TEXT NOT NULL,
    project TEXT NOT NULL,
    session_key TEXT NOT NULL,
    parent_session TEXT,
    dev INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    head_len INTEGER NOT NULL DEFAULT 0,
    head_hash BLOB,
    tail_hash BLOB,
    gone_at TEXT
);
CREATE INDEX sync_metadata_inode ON sync_metadata(dev, inode);

-- One row per transcript line, whatever its type. (file_id, generation, line_offset) is
-- the row's identity: a line is never merged with a line of another file, and a re-read
-- after truncation or replacement re-attaches unchanged lines instead of copying them.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    line_offset INTEGER NOT NULL,
    session_id TEXT,
    uuid TEXT,
    parent_uuid TEXT,
    type TEXT,
    timestamp TEXT,
    raw TEXT NOT NULL
);
CREATE UNIQUE INDEX events_position ON events(file_id, generation, line_offset);
CREATE INDEX idx_session_timestamp ON events(session_id, timestamp);

-- Lines that could not be stored. The checkpoint moves past them; they are never retried.
CREATE TABLE sync_errors (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL,
    file_path TEXT NOT NULL,
    generation INTEGER NOT NULL,
    line_offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    error TEXT NOT NULL,
    head BLOB NOT NULL,
    seen_at TEXT NOT NULL,
    UNIQUE (file_id, generation, line_offset)
);

-- Per-session figures kept current by the writer, batch by batch. A session is a
-- transcript file's session: the file name for main sessions, agent-<id> for subagents.
CREATE TABLE session_stats (
    session_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    parent_session_id TEXT,
    is_subagent INTEGER NOT NULL DEFAULT 0,
    cwd TEXT,
    first_ts TEXT,
    last_ts TEXT,
    lines INTEGER NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 0,
    custom_title TEXT,
    ai_title TEXT,
    summary TEXT,
    first_prompt TEXT
);
CREATE TABLE session_models (
    session_id TEXT NOT NULL,
    model TEXT NOT NULL,
    PRIMARY KEY (session_id, model)
) WITHOUT ROWID;

-- Public, stable views: documented in README, safe for sqlite3/datasette users.
CREATE VIEW lines AS
SELECT m.file_path, e.line_offset, e.uuid, e.parent_uuid, e.session_id, e.type, e.timestamp,
       e.raw, e.generation, e.generation = m.generation AS current
FROM events e JOIN sync_metadata m ON m.file_id = e.file_id;

CREATE VIEW sessions AS
SELECT s.session_id, s.project, s.parent_session_id, s.is_subagent, s.cwd,
       s.first_ts AS started, s.last_ts AS last_activity, s.lines, s.messages,
       COALESCE(s.custom_title, s.ai_title, s.summary, s.first_prompt) AS title,
       (SELECT group_concat(model, ',') FROM session_models sm WHERE sm.session_id = s.session_id) AS models,
       EXISTS (SELECT 1 FROM sync_metadata m WHERE m.session_key = s.session_id AND m.gone_at IS NULL)
           AS file_present
FROM session_stats s;

CREATE VIEW projects AS
SELECT project, count(*) AS sessions, sum(lines) AS lines, sum(messages) AS messages,
       min(started) AS first_activity, max(last_activity) AS last_activity,
       (SELECT cwd FROM session_stats c WHERE c.project = s.project AND c.cwd IS NOT NULL
        ORDER BY c.last_ts DESC LIMIT 1) AS cwd
FROM sessions s GROUP BY project;
"""

M007_SPEED = """
-- The sessions view's file_present (and csm status, which counts sessions whose file is gone)
-- looks up sync_metadata by session_key once per session: without this index that is a scan
-- per session, quadratic in the number of files (52 s for one csm status at 10,000 files).
CREATE INDEX sync_metadata_session ON sync_metadata(session_key);
"""

MIGRATIONS: list[tuple[str, str]] = [
    ("m001_initial", M001_INITIAL),
    ("m007_speed", M007_SPEED),
]

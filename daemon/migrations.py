"""The database schema, as numbered migrations.

Append only: a migration that has shipped is never edited; a change is a new one, numbered
next. The schema version is recorded once, in ``PRAGMA user_version``: the number of the last
migration applied, set in the migration's own transaction, so a crash mid-migration leaves the
database at the previous version, and a database written by a newer csm is recognised and
refused. (Databases made before csm 0.1's numbering recorded the names of the migrations they
had in a table ``_csm_migrations``; ``store.migrate`` reads those names once, through
``EARLIER_NAMES``, and drops the table.)
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

M002_USAGE = """
-- One row per counted API response (see README "Token accounting"). key is message.id and
-- requestId (message.id alone without a requestId; the line's own event id without a
-- message.id). Of the copies of one response (streamed lines, resumed sessions, subagent
-- messages embedded in the parent's progress lines) the row keeps the best: a non-sidechain
-- copy first, then the largest token total, then one that has usage.speed.
CREATE TABLE usage_entries (
    key TEXT NOT NULL UNIQUE,
    message_id TEXT,
    request_id TEXT,
    event_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    project TEXT NOT NULL,
    ts INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    model TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    cache_creation_5m_tokens INTEGER,
    cache_creation_1h_tokens INTEGER,
    cache_read_tokens INTEGER NOT NULL,
    speed TEXT,
    sidechain INTEGER NOT NULL,
    embedded INTEGER NOT NULL,
    cost_usd REAL
);
CREATE INDEX usage_entries_session ON usage_entries(session_id);

-- usage_entries summed per UTC quarter hour (slot = ts / 900000), project, session and model,
-- kept exact by the triggers below (a better copy replaces a row as a delete and an insert),
-- so reports read a few thousand rows, not every response. Quarter hours, because every time zone's offset is a multiple of 15 minutes:
-- a local day is always a whole number of slots.
CREATE TABLE usage_slots (
    slot INTEGER NOT NULL,
    project TEXT NOT NULL,
    session_id TEXT NOT NULL,
    model TEXT NOT NULL,
    responses INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    unpriced_tokens INTEGER NOT NULL,
    PRIMARY KEY (slot, project, session_id, model)
) WITHOUT ROWID;

CREATE TRIGGER usage_slots_add AFTER INSERT ON usage_entries BEGIN
    INSERT INTO usage_slots VALUES (
        NEW.ts / 900000, NEW.project, NEW.session_id, COALESCE(NEW.model, ''), 1, NEW.input_tokens,
        NEW.output_tokens, NEW.cache_creation_tokens, NEW.cache_read_tokens, COALESCE(NEW.cost_usd, 0),
        CASE WHEN NEW.cost_usd IS NULL THEN NEW.input_tokens + NEW.output_tokens + NEW.cache_creation_tokens
             + NEW.cache_read_tokens ELSE 0 END)
    ON CONFLICT DO UPDATE SET responses = responses + 1, input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        cache_creation_tokens = cache_creation_tokens + excluded.cache_creation_tokens,
        cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
        cost_usd = cost_usd + excluded.cost_usd, unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
END;

CREATE TRIGGER usage_slots_remove AFTER DELETE ON usage_entries BEGIN
    UPDATE usage_slots SET responses = responses - 1, input_tokens = input_tokens - OLD.input_tokens,
        output_tokens = output_tokens - OLD.output_tokens,
        cache_creation_tokens = cache_creation_tokens - OLD.cache_creation_tokens,
        cache_read_tokens = cache_read_tokens - OLD.cache_read_tokens,
        cost_usd = cost_usd - COALESCE(OLD.cost_usd, 0),
        unpriced_tokens = unpriced_tokens - CASE WHEN OLD.cost_usd IS NULL THEN OLD.input_tokens
            + OLD.output_tokens + OLD.cache_creation_tokens + OLD.cache_read_tokens ELSE 0 END
    WHERE slot = OLD.ts / 900000 AND project = OLD.project AND session_id = OLD.session_id
        AND model = COALESCE(OLD.model, '');
    DELETE FROM usage_slots WHERE slot = OLD.ts / 900000 AND project = OLD.project
        AND session_id = OLD.session_id AND model = COALESCE(OLD.model, '') AND responses = 0;
END;

-- Small settings of the usage sink (the price table the stored costs were computed with).
CREATE TABLE usage_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

-- Public, stable: one row per counted API response.
CREATE VIEW usage AS
SELECT session_id, project, timestamp, model, input_tokens, output_tokens, cache_creation_tokens,
       cache_read_tokens, cost_usd, cache_creation_5m_tokens, cache_creation_1h_tokens, speed,
       message_id, request_id, sidechain, embedded AS from_progress, event_id
FROM usage_entries;

-- Public, stable: usage per session, from the quarter-hour sums (cheap for every session at once).
CREATE VIEW session_usage AS
SELECT session_id, project, sum(responses) AS responses, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, sum(cache_creation_tokens) AS cache_creation_tokens,
       sum(cache_read_tokens) AS cache_read_tokens, sum(cost_usd) AS cost_usd,
       sum(unpriced_tokens) AS unpriced_tokens
FROM usage_slots GROUP BY session_id, project;
"""

M003_SEARCH = """
-- The prose of each user, assistant and summary line (prompts, answers, summaries; no tool
-- input or output, no thinking), written by the search sink in the batch's transaction.
-- It feeds the public messages view and the snippets of search_text.
CREATE TABLE message_text (
    event_id INTEGER PRIMARY KEY,   -- events.id
    session_id TEXT NOT NULL,       -- the session as in session_stats (the file's, not the line's)
    timestamp TEXT,
    role TEXT NOT NULL,             -- user, assistant or summary
    message_id TEXT,                -- message.id: the lines of one API response share it
    text TEXT NOT NULL
);

-- Full-text indexes (FTS5, bm25). search_text indexes message_text (external content: the
-- text is stored once). search_tools indexes tool input and output, most of the bytes, and
-- is contentless: only the index is stored; snippets are made from the line when asked for.
-- The rowid of both is events.id.
CREATE VIRTUAL TABLE search_text USING fts5(
    text, content='message_text', content_rowid='event_id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE search_tools USING fts5(
    text, content='', tokenize='porter unicode61 remove_diacritics 2'
);

-- Lines whose tool text is still to be indexed: a large rescan (an initial sync) indexes the
-- prose line by line and leaves the tool text, most of the bytes, to a pass after it.
CREATE TABLE search_tools_pending (event_id INTEGER PRIMARY KEY);

-- Lines ingested before this migration are indexed by csmd when it starts, newest first;
-- ids below pending_below are still to do; 0 when done.
CREATE TABLE search_backfill (pending_below INTEGER NOT NULL);
INSERT INTO search_backfill SELECT COALESCE(max(id) + 1, 0) FROM events;

-- csm query sessions: newest first, the file_present check, and a session's subagents (whose
-- tokens and cost count in its row; show nests them).
CREATE INDEX session_stats_last_ts ON session_stats(last_ts);
CREATE INDEX session_stats_parent ON session_stats(parent_session_id);
CREATE INDEX sync_metadata_session_key ON sync_metadata(session_key);

-- Public: one row per user or assistant message with text. The lines of one API response
-- (same message.id) are one message: its first line's row, their texts joined in file order
-- (a window with ORDER BY: the order is guaranteed, unlike a plain group_concat).
CREATE INDEX message_text_message ON message_text(session_id, message_id, event_id);
CREATE VIEW messages AS
SELECT h.session_id, h.timestamp, h.role,
       CASE WHEN h.message_id IS NULL THEN h.text ELSE (
           SELECT text FROM (
               SELECT p.event_id, group_concat(p.text, char(10)) OVER (ORDER BY p.event_id) AS text
               FROM message_text p WHERE p.session_id = h.session_id AND p.message_id = h.message_id)
           ORDER BY event_id DESC LIMIT 1) END AS text,
       h.message_id
FROM message_text h
WHERE h.role IN ('user', 'assistant')
  AND (h.message_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM message_text q
      WHERE q.session_id = h.session_id AND q.message_id = h.message_id AND q.event_id < h.event_id));
"""

M004_LINE_ERRORS = """
-- Stored lines whose derived data failed: the line is a row of events like any other, but
-- one part of what csm derives from it (its usage, its search text, its session figures) could
-- not be made, say a token count SQLite cannot sum. One row per line and part; csm query errors
-- lists them with the bad lines, csm status counts them.
CREATE TABLE line_errors (
    event_id INTEGER NOT NULL,      -- events.id
    part TEXT NOT NULL,             -- usage, search, sessions, view, or all (the line's batch failed alone)
    error TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (event_id, part)
) WITHOUT ROWID;
"""

M005_SESSION_IDENTITY = """
-- A checkpoint is a file, found by its identity (dev, inode, head) wherever it moves. Its path is
-- unique only among live checkpoints: a gone checkpoint keeps the path its file was last seen at,
-- even once another file lives there (a file renamed over it, two files swapped). file_id becomes
-- the key. Copied through a scratch table: views refer to sync_metadata by name, so it is never
-- renamed.
CREATE TEMP TABLE m006_files AS SELECT * FROM sync_metadata;
DROP TABLE sync_metadata;
CREATE TABLE sync_metadata (
    file_id INTEGER PRIMARY KEY,
    file_path TEXT NOT NULL,
    last_position INTEGER NOT NULL,
    last_modified TEXT NOT NULL,
    last_synced_at TEXT NOT NULL,
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
INSERT INTO sync_metadata (file_id, file_path, last_position, last_modified, last_synced_at, root, project,
    session_key, parent_session, dev, inode, size, mtime_ns, generation, head_len, head_hash, tail_hash, gone_at)
SELECT file_id, file_path, last_position, last_modified, last_synced_at, root, project, session_key,
    parent_session, dev, inode, size, mtime_ns, generation, head_len, head_hash, tail_hash, gone_at
FROM m006_files;
DROP TABLE m006_files;
CREATE UNIQUE INDEX sync_metadata_live_path ON sync_metadata(file_path) WHERE gone_at IS NULL;
CREATE INDEX sync_metadata_path ON sync_metadata(file_path);
CREATE INDEX sync_metadata_inode ON sync_metadata(dev, inode);
CREATE INDEX sync_metadata_session_key ON sync_metadata(session_key);

-- A session is its file (file_id): the same session id in two places (a copied project folder,
-- both default roots, two subagents with one short id under different parents) is two sessions.
-- session_id stays the id Claude Code knows (the file name; agent-<id> for subagents).
CREATE TEMP TABLE m006_sessions AS SELECT * FROM session_stats;
CREATE TEMP TABLE m006_models AS SELECT * FROM session_models;
DROP TABLE session_stats;
DROP TABLE session_models;
CREATE TABLE session_stats (
    file_id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
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
INSERT INTO session_stats
SELECT m.file_id, s.session_id, m.project, s.parent_session_id, s.is_subagent, s.cwd, s.first_ts, s.last_ts,
       s.lines, s.messages, s.custom_title, s.ai_title, s.summary, s.first_prompt
FROM sync_metadata m JOIN m006_sessions s ON s.session_id = m.session_key;
-- Files that shared a key had their figures summed into one row: each one's counts again from its rows.
UPDATE session_stats SET (lines, messages, first_ts, last_ts) = (
    SELECT count(*), count(*) FILTER (WHERE e.type IN ('user', 'assistant')
                                       AND json_extract(e.raw, '$.isMeta') IS NOT 1),
           min(e.timestamp), max(e.timestamp)
    FROM events e WHERE e.file_id = session_stats.file_id)
WHERE session_id IN (SELECT session_key FROM sync_metadata GROUP BY session_key HAVING count(*) > 1);
CREATE TABLE session_models (
    file_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    PRIMARY KEY (file_id, model)
) WITHOUT ROWID;
INSERT INTO session_models SELECT m.file_id, sm.model FROM sync_metadata m JOIN m006_models sm
    ON sm.session_id = m.session_key;
DROP TABLE m006_sessions;
DROP TABLE m006_models;
CREATE INDEX session_stats_session ON session_stats(session_id);
CREATE INDEX session_stats_last_ts ON session_stats(last_ts);
CREATE INDEX session_stats_parent ON session_stats(parent_session_id);

-- Public: file_path names the session's transcript, so copies of one session can be told apart.
DROP VIEW sessions;
CREATE VIEW sessions AS
SELECT s.session_id, s.project, s.parent_session_id, s.is_subagent, s.cwd,
       s.first_ts AS started, s.last_ts AS last_activity, s.lines, s.messages,
       COALESCE(s.custom_title, s.ai_title, s.summary, s.first_prompt) AS title,
       (SELECT group_concat(model, ',') FROM session_models sm WHERE sm.file_id = s.file_id) AS models,
       m.gone_at IS NULL AS file_present, m.file_path
FROM session_stats s JOIN sync_metadata m ON m.file_id = s.file_id;
"""

M006_TEAM_MIRROR = """
-- Team mode (csm.team.mirror): how far the mirror into the team's PostgreSQL has got. position is
-- the events.id up to which PostgreSQL has committed every shared row; it moves only after that
-- commit, so a crash in between re-sends a batch, which the upserts there absorb. archive is this
-- database's own random id: a rebuilt archive's file and event ids never overwrite the old ones there.
-- The mirror's own connection writes this row, and nothing else.
CREATE TABLE team_mirror (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    archive TEXT NOT NULL,
    position INTEGER NOT NULL,
    synced_at TEXT
);
INSERT INTO team_mirror VALUES (1, lower(hex(randomblob(16))), 0, NULL);
-- The mirror reads the usage rows of a range of lines.
CREATE INDEX usage_entries_event ON usage_entries(event_id);
"""

M007_SEARCH_FOR_DATASETTE = """
-- datasette finds a table's full-text index by content="<table>" (double quotes or brackets)
-- in the index's definition; migration 3 wrote content='message_text', which it does not recognise.
-- search_text indexes message_text (external content), so it is rebuilt from it: nothing is
-- lost. search_tools is contentless (content=''): nothing could rebuild it, and it has no
-- table of its own to search in datasette, so it stays as it is.
DROP TABLE search_text;
CREATE VIRTUAL TABLE search_text USING fts5(
    text, content="message_text", content_rowid="event_id", tokenize='porter unicode61 remove_diacritics 2'
);
INSERT INTO search_text(search_text) VALUES ('rebuild');
"""

M008_INCREMENTAL_VACUUM = """
-- Free pages can be given back to the file system a few at a time (daemon/space.py), never by
-- rewriting the whole file while csmd runs. An existing database takes the setting only by being
-- rewritten once: VACUUM copies every page (through the WAL, with temporary files on disk, not in
-- memory), about 1 s per 100-200 MB here; store.migrate says so in the log before it starts (and gives
-- systemd's start timeout that much more, so a large file is not killed mid-rewrite), and a new
-- database is made incremental from its first page (so this is skipped for it). Not in a
-- transaction: VACUUM cannot run in one; it is atomic itself, and a kill before the migration is
-- recorded only means the next start finds the setting in place and records it.
PRAGMA auto_vacuum = INCREMENTAL;
VACUUM;
"""

M009_COMPRESSED_LINES = """
-- A quiet session's lines stored compressed (daemon/compress.py): raw is then '' and zraw holds the
-- line compressed with zstd and the dictionary dict_id of raw_dictionaries. Dictionaries are never
-- changed or deleted, so a row compressed with an old one stays readable after a new one is trained.
ALTER TABLE events ADD COLUMN zraw BLOB;
ALTER TABLE events ADD COLUMN dict_id INTEGER REFERENCES raw_dictionaries(id);
CREATE TABLE raw_dictionaries (
    id INTEGER PRIMARY KEY,
    trained_at TEXT NOT NULL,
    lines INTEGER NOT NULL, -- the archive's rows when it was trained: a new one is due when they have grown
    dict BLOB NOT NULL
);
-- The public lines view shows zraw and dict_id too, so any SQLite tool still reads it (a compressed
-- line's raw is '' there; README shows how to decompress it). csm's own connections see a temporary
-- lines view of the same name and columns whose raw is the line's text, compressed or not
-- (daemon/rawtext.py), so csm query sql reads every line as before.
DROP VIEW lines;
CREATE VIEW lines AS
SELECT m.file_path, e.line_offset, e.uuid, e.parent_uuid, e.session_id, e.type, e.timestamp,
       e.raw, e.generation, e.generation = m.generation AS current, e.zraw, e.dict_id
FROM events e JOIN sync_metadata m ON m.file_id = e.file_id;
"""

M010_SEARCH_TEXT_PENDING = """
-- Lines whose prose is in message_text but not yet in search_text: a large rescan (a first sync) stores
-- each line's prose with it and indexes it just after the rows, in bulk (daemon/search.py), as it
-- already does the tool text (search_tools_pending).
CREATE TABLE search_text_pending (event_id INTEGER PRIMARY KEY);
"""

M011_COMPRESSED_ROWS_REWRITTEN = """
-- A row compressed in place left its b-tree page two-thirds empty, and only wholly free pages go back to
-- the file system, so compression barely shrank the file. csmd now deletes a batch of rows and inserts
-- them again compressed (same ids), which packs them into few pages (daemon/compress.py), and rewrites
-- the rows compressed in place before this migration the same way, newest first, as idle work: ids below
-- compress_rewrite.below are still to do; 0 when done. The migration itself only records where to start
-- (instant); the rewrite runs at csmd's pace later, in bounded transactions.
CREATE TABLE compress_rewrite (below INTEGER NOT NULL);
INSERT INTO compress_rewrite SELECT COALESCE(max(id) + 1, 0) FROM events WHERE zraw IS NOT NULL;
-- The rows still plain, by file: the compressor finds a quiet file's next batch, and that a file has none
-- left, without reading the file's compressed rows (it read every row of every quiet file at each idle
-- round). Only plain rows are in it: once the archive is compressed it holds the live sessions' lines.
-- Building it reads the events table once (a few seconds per GB of transcripts).
CREATE INDEX events_plain ON events(file_id) WHERE zraw IS NULL;
"""

M012_ARCHIVES = """
-- Archival (daemon/archive.py): whole quiet sessions' lines moved into archive files beside this one,
-- one per year of the session's end (<this file's stem>-archive-<name><suffix>), read-only once written;
-- csmd's readers attach them and read main and archives as one (daemon/attach.py). Everything derived
-- (session figures, usage, search index, checkpoints) stays here.
CREATE TABLE archives (
    name TEXT PRIMARY KEY,      -- the year, e.g. 2025: file csm-archive-2025.db, attached as archive_2025
    max_id INTEGER NOT NULL     -- the highest events.id ever moved there: this file never gives it out again
);
-- One row per session (file) whose lines are in an archive; lines appended to it later stay here
-- until it is archived again (into the same archive).
CREATE TABLE archived_files (
    file_id INTEGER PRIMARY KEY,
    archive TEXT NOT NULL REFERENCES archives(name),
    lines INTEGER NOT NULL,
    moved_at TEXT NOT NULL
);
-- A move in progress: written before the lines are copied into the archive, deleted in the transaction
-- that deletes them here. csmd finds one only after a kill, and undoes it on start (the copies go).
CREATE TABLE archive_journal (
    file_id INTEGER PRIMARY KEY,
    archive TEXT NOT NULL,
    started_at TEXT NOT NULL
);
"""

M013_TOOL_TEXT_UNSTEMMED = """
-- Tool text (code, paths, commands, logs) is indexed as it is written, without stemming: a word is found
-- as written (case and diacritics aside), and a prefix query (parser*) finds its longer forms. Prose keeps
-- stemming (search_text). search_tools is contentless, so it is rebuilt from the stored lines: the
-- migration only lists them (each message line in the main file, already indexed by the backfill if
-- search_backfill says so; and each archive, with the id below which its lines are to do), and csmd
-- re-indexes them as idle work after its start's rescan, newest first, in bounded transactions that give
-- way to new lines (daemon/search.py: the same catch-up as after a first sync). Until then
-- search --include-tools finds the lines rebuilt so far.
DROP TABLE search_tools;
CREATE VIRTUAL TABLE search_tools USING fts5(text, content='', tokenize='unicode61 remove_diacritics 2');
-- FTS5 merges 16 segments of a level at once instead of 4: a third less CPU for a large catch-up (a first
-- sync, this rebuild), and queries measured no slower for the extra segments (bench/RESULTS.md). A level
-- merged whole at once (crisismerge) only past 64 segments, not at 16: such merges made single commits of
-- the catch-up take 230-270 ms, where a hint may wait; incremental merging keeps them under 100 ms.
INSERT INTO search_tools(search_tools, rank) VALUES ('automerge', 16);
INSERT INTO search_tools(search_tools, rank) VALUES ('crisismerge', 64);
INSERT OR IGNORE INTO search_tools_pending SELECT id FROM events
    WHERE type IN ('user', 'assistant') AND id >= (SELECT COALESCE(max(pending_below), 0) FROM search_backfill);
CREATE TABLE search_tools_archived (archive TEXT PRIMARY KEY, below INTEGER NOT NULL);
INSERT INTO search_tools_archived SELECT name, max_id + 1 FROM archives;
-- Used by no query of csm's (bench/RESULTS.md, "Tool text"), and 4 % of the file: a session's lines are
-- found by file (events_position), through sync_metadata.
DROP INDEX idx_session_timestamp;
"""

OUTSIDE_TRANSACTION = frozenset({"incremental_vacuum"})
"""Migrations that rewrite the file (VACUUM) and so run outside the transaction that records them."""

MIGRATIONS: list[tuple[str, str]] = [
    ("initial", M001_INITIAL),
    ("usage", M002_USAGE),
    ("search", M003_SEARCH),
    ("line_errors", M004_LINE_ERRORS),
    ("session_identity", M005_SESSION_IDENTITY),
    ("team_mirror", M006_TEAM_MIRROR),
    ("search_for_datasette", M007_SEARCH_FOR_DATASETTE),
    ("incremental_vacuum", M008_INCREMENTAL_VACUUM),
    ("compressed_lines", M009_COMPRESSED_LINES),
    ("search_text_pending", M010_SEARCH_TEXT_PENDING),
    ("compressed_rows_rewritten", M011_COMPRESSED_ROWS_REWRITTEN),
    ("archives", M012_ARCHIVES),
    ("tool_text_unstemmed", M013_TOOL_TEXT_UNSTEMMED),
]
"""(name, SQL) of migration 1, 2, …: its number is its place in the list."""

EARLIER_NAMES = {
    "m001_initial": 1, "m003_usage": 2, "m004_search": 3, "m005_line_errors": 4, "m006_session_identity": 5,
    "m007_team_mirror": 6, "m008_search_for_datasette": 7,
}
"""The names earlier csm versions recorded in ``_csm_migrations``, and the number each one is now."""

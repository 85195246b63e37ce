"""The team store's schema in PostgreSQL: numbered migrations, roles and row-level security.

``csm team init`` runs this once, as whoever administers the database (a role that may create
roles and owns the database). Everything lives in the schema ``csm``. Two group roles:

- ``csm_team``: the members. They may insert and update rows only under a member name the
  ``csm.members`` table gives their own login role (row-level security), and read everything
  the team shares. csmd connects as a member.
- ``csm_reader``: dashboards (Grafana, Metabase, psql): read only.

A row's identity is its member, machine and local identity (the usage key; the archive and the
``events.id`` or ``file_id``), so a batch sent twice (a crash between PostgreSQL's commit and
csmd's own) lands once. Nothing here ever deletes a row.

Append only, like the local migrations: a shipped migration is never edited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

TEAM_ROLE = "csm_team"
READER_ROLE = "csm_reader"

M001_TABLES = """
CREATE TABLE csm.members (
    member text PRIMARY KEY,
    role name NOT NULL          -- the login role allowed to write this member's rows
);

-- One row per counted API response of a member's machine (share = usage and up).
CREATE TABLE csm.usage (
    member text NOT NULL,
    machine text NOT NULL,
    key text NOT NULL,          -- message.id + requestId, as in the local usage_entries
    session_id text NOT NULL,
    project text NOT NULL,
    at timestamptz NOT NULL,
    model text,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cache_creation_tokens bigint NOT NULL,
    cache_read_tokens bigint NOT NULL,
    cache_creation_5m_tokens bigint,
    cache_creation_1h_tokens bigint,
    cost_usd double precision,  -- NULL: the model has no price (never a silent 0)
    speed text,
    message_id text,
    request_id text,
    sidechain boolean NOT NULL,
    PRIMARY KEY (member, machine, key)
);
CREATE INDEX usage_at ON csm.usage (at);

-- One row per transcript file's session (share = sessions and up). archive: the local database's
-- own random id, so the file_ids of a rebuilt archive never overwrite the old one's rows.
CREATE TABLE csm.sessions (
    member text NOT NULL,
    machine text NOT NULL,
    archive text NOT NULL,
    file_id bigint NOT NULL,
    session_id text NOT NULL,
    project text NOT NULL,
    parent_session_id text,
    is_subagent boolean NOT NULL,
    cwd text,
    started timestamptz,
    last_activity timestamptz,
    lines integer NOT NULL,
    messages integer NOT NULL,
    title text,
    models text,
    PRIMARY KEY (member, machine, archive, file_id)
);
CREATE INDEX sessions_last_activity ON csm.sessions (last_activity);
CREATE INDEX sessions_session ON csm.sessions (session_id);

-- Every transcript line (share = transcripts), exactly as written.
CREATE TABLE csm.lines (
    member text NOT NULL,
    machine text NOT NULL,
    archive text NOT NULL,
    event_id bigint NOT NULL,
    file_id bigint NOT NULL,
    session_id text,
    project text NOT NULL,
    type text,
    at timestamptz,
    raw text NOT NULL,
    PRIMARY KEY (member, machine, archive, event_id)
);

-- The prose of each prompt, answer and summary (share = transcripts), for full-text search.
CREATE TABLE csm.messages (
    member text NOT NULL,
    machine text NOT NULL,
    archive text NOT NULL,
    event_id bigint NOT NULL,
    session_id text NOT NULL,
    project text NOT NULL,
    role text NOT NULL,
    at timestamptz,
    text text NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    PRIMARY KEY (member, machine, archive, event_id)
);
CREATE INDEX messages_tsv ON csm.messages USING gin (tsv);

-- Public, documented views (README "Team"). security_invoker: they read with the reader's rights,
-- so row-level security applies through them too.
CREATE VIEW csm.usage_daily WITH (security_invoker = true) AS
SELECT member, machine, (at AT TIME ZONE 'UTC')::date AS day, project, COALESCE(model, '') AS model,
       count(*) AS responses, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cache_creation_tokens) AS cache_creation_tokens, sum(cache_read_tokens) AS cache_read_tokens,
       COALESCE(sum(cost_usd), 0) AS cost_usd,
       COALESCE(sum(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens)
                FILTER (WHERE cost_usd IS NULL), 0) AS unpriced_tokens
FROM csm.usage GROUP BY 1, 2, 3, 4, 5;

CREATE VIEW csm.session_list WITH (security_invoker = true) AS
SELECT s.member, s.machine, s.session_id, s.project, s.title, s.cwd, s.started, s.last_activity, s.lines,
       s.messages, s.models, s.parent_session_id, s.is_subagent,
       u.responses, u.input_tokens, u.output_tokens, u.cache_creation_tokens, u.cache_read_tokens, u.cost_usd
FROM csm.sessions s
LEFT JOIN LATERAL (
    SELECT count(*) AS responses, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           sum(cache_creation_tokens) AS cache_creation_tokens, sum(cache_read_tokens) AS cache_read_tokens,
           sum(cost_usd) AS cost_usd
    FROM csm.usage x WHERE x.member = s.member AND x.machine = s.machine AND x.session_id = s.session_id
) u ON true;
CREATE INDEX usage_session ON csm.usage (member, machine, session_id);
"""

DATA_TABLES = ("usage", "sessions", "lines", "messages")

M002_SECURITY = "\n".join(
    f"""
ALTER TABLE csm.{t} ENABLE ROW LEVEL SECURITY;
CREATE POLICY team_reads ON csm.{t} FOR SELECT TO {TEAM_ROLE}, {READER_ROLE} USING (true);
CREATE POLICY own_inserts ON csm.{t} FOR INSERT TO {TEAM_ROLE}
    WITH CHECK (member IN (SELECT m.member FROM csm.members m WHERE m.role = current_user));
CREATE POLICY own_updates ON csm.{t} FOR UPDATE TO {TEAM_ROLE}
    USING (member IN (SELECT m.member FROM csm.members m WHERE m.role = current_user))
    WITH CHECK (member IN (SELECT m.member FROM csm.members m WHERE m.role = current_user));
GRANT SELECT, INSERT, UPDATE ON csm.{t} TO {TEAM_ROLE};
GRANT SELECT ON csm.{t} TO {READER_ROLE};
""" for t in DATA_TABLES) + f"""
GRANT USAGE ON SCHEMA csm TO {TEAM_ROLE}, {READER_ROLE};
GRANT SELECT ON csm.members, csm.usage_daily, csm.session_list TO {TEAM_ROLE}, {READER_ROLE};
"""

MIGRATIONS: list[tuple[str, str]] = [
    ("t001_tables", M001_TABLES),
    ("t002_security", M002_SECURITY),
]


def _ensure_role(conn: psycopg.Connection, role: str, login: bool) -> None:
    from psycopg import sql

    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        conn.execute(sql.SQL("CREATE ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(sql.Identifier(role)))


def migrate(conn: psycopg.Connection) -> list[str]:
    """Create the group roles and the schema, and apply the migrations not yet applied; their names."""
    done: list[str] = []
    with conn.transaction():
        _ensure_role(conn, TEAM_ROLE, login=False)
        _ensure_role(conn, READER_ROLE, login=False)
        conn.execute("CREATE SCHEMA IF NOT EXISTS csm")
        conn.execute("CREATE TABLE IF NOT EXISTS csm.migrations (version integer PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("LOCK TABLE csm.migrations")  # two admins at once: one applies, the other sees it done
        applied = {r[0] for r in conn.execute("SELECT version FROM csm.migrations")}
        for version, (name, script) in enumerate(MIGRATIONS, 1):
            if version in applied:
                continue
            conn.execute(script)  # type: ignore[arg-type]  # our own constant: many statements, no parameters
            conn.execute("INSERT INTO csm.migrations (version, name) VALUES (%s, %s)", (version, name))
            done.append(name)
    return done


def add_member(conn: psycopg.Connection, member: str, role: str | None = None) -> None:
    """Let ``role`` (default: a login role named like the member, created without a password) write
    ``member``'s rows. One role per member is least privilege; one shared role for several members
    is allowed (then they can write each other's rows). Passwords are the admin's business (``\\password``
    in psql, or certificate or peer authentication): never csm's."""
    from psycopg import sql

    role = role or member
    with conn.transaction():
        _ensure_role(conn, role, login=True)
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(TEAM_ROLE), sql.Identifier(role)))
        conn.execute("INSERT INTO csm.members (member, role) VALUES (%s, %s) "
                     "ON CONFLICT (member) DO UPDATE SET role = EXCLUDED.role", (member, role))

"""Reading the team store: ``csm query usage|sessions|search --team``, answered by PostgreSQL.

The CLI connects to PostgreSQL itself, with the member's own role (the ``[team]`` connection of
config.toml and libpq's password file): that role may read what the team shares and nothing
more, and csmd stays out of the way (no reads of other people's rows pass through it). The same
rules as the local reports: ``--project`` is a substring of the folder name ignoring case; times
are UTC instants the client read in the user's zone; days are the ``--tz`` zone's days.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csm.shared import timespec
from csm.shared.config import Team
from csm.shared.errors import TeamUnavailable

if TYPE_CHECKING:
    import psycopg

TEAM_GROUPS = ("member", "machine", "project", "model", "session", "day", "week", "month")
TOTALS = ["responses", "input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens",
          "total_tokens", "cost_usd", "unpriced_tokens"]


def connect(team: Team | None) -> psycopg.Connection:
    if team is None:
        raise TeamUnavailable("team mode is off: add a [team] section to config.toml (README, \"Team\")")
    try:
        import psycopg
    except ImportError:
        raise TeamUnavailable("team mode needs psycopg: pip install 'csm[team]'") from None
    try:
        return psycopg.connect(team.conninfo(), connect_timeout=10, autocommit=True)
    except psycopg.Error as e:
        raise TeamUnavailable(f"cannot reach the team database ({team.conninfo()}): {' '.join(str(e).split())}") from None


def _filters(project: str | None, since: str | None, until: str | None, at: str) -> tuple[str, list[Any]]:
    conds, params = ["true"], []
    if project:
        conds.append("strpos(lower(project), lower(%s)) > 0")
        params.append(project)
    if since:
        conds.append(f"{at} >= %s")
        params.append(timespec.from_wire(since))
    if until:
        conds.append(f"{at} < %s")
        params.append(timespec.from_wire(until))
    return " AND ".join(conds), params


def usage(pg: psycopg.Connection, by: str, since: str | None, until: str | None, tz: str,
          project: str | None) -> tuple[list[str], list[list[Any]]]:
    """Totals per ``by`` group, with the local report's columns (``total_tokens``, ``unpriced_tokens``)."""
    where, params = _filters(project, since, until, "at")
    key = {"member": "member", "machine": "machine", "project": "project", "model": "COALESCE(model, '')",
           "session": "session_id",
           "day": "to_char((at AT TIME ZONE %s)::date, 'YYYY-MM-DD')",
           "week": "to_char(date_trunc('week', at AT TIME ZONE %s), 'YYYY-MM-DD')",
           "month": "to_char(at AT TIME ZONE %s, 'YYYY-MM')"}[by]
    key_params = [tz] if "%s" in key else []
    rows = pg.execute(
        f"SELECT {key} AS k, count(*), sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens), "
        "sum(cache_read_tokens), sum(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens), "
        "sum(cost_usd), COALESCE(sum(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens) "
        f"FILTER (WHERE cost_usd IS NULL), 0) FROM csm.usage WHERE {where} GROUP BY 1 ORDER BY 1",
        [*key_params, *params]).fetchall()
    return [by, *TOTALS], [[r[0], *(int(v) for v in r[1:7]), None if r[7] is None else round(r[7], 6), int(r[8])]
                           for r in rows]


def sessions(pg: psycopg.Connection, project: str | None, since: str | None, until: str | None,
             limit: int) -> tuple[list[str], list[list[Any]]]:
    where, params = _filters(project, since, until, "last_activity")
    cur = pg.execute(
        "SELECT member, machine, session_id, project, title, started, last_activity, messages, "
        "COALESCE(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens, 0) AS tokens, cost_usd "
        f"FROM csm.session_list WHERE {where} ORDER BY last_activity DESC NULLS LAST LIMIT %s", [*params, limit])
    columns = [d.name for d in cur.description or []]
    return columns, [[_plain(v) for v in r] for r in cur.fetchall()]


def search(pg: psycopg.Connection, text: str, project: str | None, since: str | None, until: str | None,
           limit: int) -> tuple[list[str], list[list[Any]]]:
    """PostgreSQL's full-text search (``websearch_to_tsquery``: words, "phrases", OR, -not), best first.
    Matches are marked «…» in the snippet, as csmd marks the local search's."""
    where, params = _filters(project, since, until, "at")
    cur = pg.execute(
        "SELECT member, machine, session_id, project, at AS timestamp, role, "
        "ts_headline('english', text, q, 'StartSel=«, StopSel=», MaxFragments=1, MaxWords=30, MinWords=10') AS snippet, "
        "ts_rank(tsv, q) AS score FROM csm.messages, websearch_to_tsquery('english', %s) q "
        f"WHERE tsv @@ q AND {where} ORDER BY score DESC, at DESC LIMIT %s", [text, *params, limit])
    columns = [d.name for d in cur.description or []]
    return columns, [[_plain(v) for v in r] for r in cur.fetchall()]


def _plain(v: Any) -> Any:
    """A value for JSON and tables: times as ISO-8601 UTC, as the local archive writes them; sums of
    integers (PostgreSQL's ``numeric``) as integers."""
    from datetime import UTC, datetime
    from decimal import Decimal

    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v

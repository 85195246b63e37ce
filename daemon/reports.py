"""Reports csmd answers from its own tables (read-only connections, on the query pool).

``usage``: tokens and cost grouped by day, week, month, session, project or model. It reads
``usage_slots`` (quarter-hour sums kept by triggers), not the responses themselves, so its
cost grows with the number of active quarter hours, not with the history's size. Local
days are whole runs of quarter hours in any zone, found by walking the sorted slots once.
"""

from __future__ import annotations

import datetime
import sqlite3
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from csm.daemon.browse import time_limit
from csm.shared.errors import QueryError
from csm.shared.protocol import UsageReport, UsageRows
from csm.shared.timerange import parse_day

SLOT_S = 900
TIME_GROUPS = ("day", "week", "month")
GROUPS = (*TIME_GROUPS, "session", "project", "model")
TOTALS = ["responses", "input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens",
          "total_tokens", "cost_usd", "unpriced_tokens"]
_SUMS = ("sum(responses), sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens), "
         "sum(cache_read_tokens), sum(cost_usd), sum(unpriced_tokens)")
NO_MODEL = "(no model)"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QueryError(f"unknown time zone '{name}': use an IANA name such as Europe/Berlin, or UTC") from None


def _midnight(day: datetime.date, tz: ZoneInfo) -> float:
    return datetime.datetime.combine(day, datetime.time(), tzinfo=tz).timestamp()


def _filters(req: UsageReport, tz: ZoneInfo) -> tuple[str, list[Any]]:
    today = datetime.datetime.now(tz).date()
    where: list[str] = []
    params: list[Any] = []
    since = until = None
    if req.since:
        since = parse_day(req.since, today)
        where.append("slot >= ?")
        params.append(int(_midnight(since, tz) // SLOT_S))
    if req.until:
        until = parse_day(req.until, today)
        where.append("slot < ?")
        params.append(-int(-_midnight(until + datetime.timedelta(days=1), tz) // SLOT_S))
    if since and until and until < since:
        raise QueryError(f"--until {until} is before --since {since}")
    if req.project:
        where.append("project = ?")
        params.append(req.project)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def _add(acc: dict[Any, list[Any]], key: Any, vals: tuple[Any, ...]) -> None:
    a = acc.get(key)
    if a is None:
        acc[key] = list(vals)
    else:
        for i, v in enumerate(vals):
            a[i] += v


def _by_day(conn: sqlite3.Connection, where: str, params: list[Any], tz: ZoneInfo) -> dict[Any, list[Any]]:
    acc: dict[Any, list[Any]] = {}
    boundary = float("-inf")
    day = None
    for slot, *vals in conn.execute(f"SELECT slot, {_SUMS} FROM usage_slots{where} GROUP BY slot ORDER BY slot",
                                    params):
        t = slot * SLOT_S
        if t >= boundary:
            day = datetime.datetime.fromtimestamp(t, tz).date()
            boundary = _midnight(day + datetime.timedelta(days=1), tz)
        _add(acc, day, tuple(vals))
    return acc


def _row(key: list[Any], vals: list[Any]) -> list[Any]:
    responses, i, o, cc, cr, cost, unpriced = vals
    total = i + o + cc + cr
    usd = None if unpriced and unpriced == total else round(cost, 6)
    return [*key, responses, i, o, cc, cr, total, usd, unpriced]


def usage(conn: sqlite3.Connection, req: UsageReport, prices_updated: str) -> UsageRows:
    """Under the same time limit as every report (and taking turns with live appends, as they do)."""
    with time_limit(conn):
        return _usage(conn, req, prices_updated)


def _usage(conn: sqlite3.Connection, req: UsageReport, prices_updated: str) -> UsageRows:
    if req.by not in GROUPS:
        raise QueryError(f"cannot group usage by '{req.by}': use one of {', '.join(GROUPS)}")
    tz = zone(req.tz)
    where, params = _filters(req, tz)
    rows: list[list[Any]]
    if req.by in TIME_GROUPS:
        days = _by_day(conn, where, params, tz)
        periods: dict[Any, list[Any]] = {}
        for day, vals in days.items():
            if req.by == "day":
                key = day.isoformat()
            elif req.by == "week":
                key = (day - datetime.timedelta(days=day.weekday())).isoformat()
            else:
                key = day.strftime("%Y-%m")
            _add(periods, key, tuple(vals))
        columns = [req.by] + TOTALS
        rows = [_row([k], v) for k, v in sorted(periods.items())]
    else:
        keys = {"session": ["session_id", "project"], "project": ["project"], "model": ["model"]}[req.by]
        group = ", ".join(keys)
        found = conn.execute(f"SELECT {group}, {_SUMS} FROM usage_slots{where} GROUP BY {group}", params)
        rows = [_row(list(r[: len(keys)]), list(r[len(keys):])) for r in found]
        if req.by == "model":
            for r in rows:
                r[0] = r[0] or NO_MODEL
        cost_at = len(keys) + TOTALS.index("cost_usd")
        total_at = len(keys) + TOTALS.index("total_tokens")
        rows.sort(key=lambda r: (r[cost_at] or 0.0, r[total_at]), reverse=True)
        columns = keys + TOTALS
    unpriced: list[str] = []
    if any(r[-1] for r in rows):
        extra = " AND " if where else " WHERE "
        unpriced = sorted(m or NO_MODEL for (m,) in conn.execute(
            f"SELECT DISTINCT model FROM usage_slots{where}{extra}unpriced_tokens > 0", params))
    return UsageRows(columns=columns, rows=rows, unpriced_models=unpriced, prices_updated=prices_updated, tz=req.tz)

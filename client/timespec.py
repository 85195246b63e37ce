"""Times on the command line (``--since 7d``, ``--until 2026-11-01``) and times shown to people.

Transcripts store ISO-8601 UTC (``2026-11-01T10:00:00.000Z``); bounds are sent to csmd as
``YYYY-MM-DDTHH:MM:SS`` in UTC, which compares correctly with those strings. Dates a person
types or reads are in the local time zone (``TZ``), as ``ls`` and ``git log`` show them.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import click

_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_WIRE = "%Y-%m-%dT%H:%M:%S"


def _wire(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime(_WIRE)


def parse(value: str, *, end: bool = False, now: datetime | None = None) -> str:
    """A bound for csmd. ``7d``/``12h``/``30m``/``2w`` count back from now; a date is local
    midnight, and as an ``end`` bound it includes that whole day."""
    text = value.strip()
    now = now or datetime.now(timezone.utc)
    m = _RELATIVE.match(text)
    if m:
        return _wire(now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))}))
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time: use 7d, 12h, 30m, 2w, a date (2026-11-01) or a date and time "
            "(2026-11-01T14:30)") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    if end and len(text) == 10:
        dt += timedelta(days=1)
    return _wire(dt)


def since_option(fn):  # type: ignore[no-untyped-def]
    """``--since`` and ``--until``, checked by click and handed to the command as wire bounds."""
    fn = click.option("--until", metavar="WHEN", callback=lambda ctx, p, v: v and parse(v, end=True),
                      help="Only before this (a date includes that whole day).")(fn)
    return click.option("--since", metavar="WHEN", callback=lambda ctx, p, v: v and parse(v),
                        help="Only from this time on: 7d, 12h, 2w, 2026-11-01, 2026-11-01T14:30.")(fn)


def local(ts: str | None, seconds: bool = False) -> str:
    """A stored UTC timestamp as local ``YYYY-MM-DD HH:MM`` (unparseable ones as they are)."""
    if not ts:
        return ""
    try:
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

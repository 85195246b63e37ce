"""The days a report covers, from what a user types: ``7d``, ``2w``, ``2026-02-10``, ``today``.

Days are calendar days in a time zone (an IANA name); the daemon turns them into instants
with ``zoneinfo``, so a day that has 23 or 25 hours (DST) is still one day.
"""

from __future__ import annotations

import datetime
import os
import re

from csm.shared.errors import QueryError

FORMATS = "YYYY-MM-DD, YYYYMMDD, today, yesterday, or Nd / Nw (the last N days / weeks, today included)"
_RELATIVE = re.compile(r"^(\d+)([dw])$")


def parse_day(text: str, today: datetime.date) -> datetime.date:
    """A calendar day; ``Nd`` is the first of the last N days (``1d`` is today)."""
    t = text.strip().lower()
    if t == "today":
        return today
    if t == "yesterday":
        return today - datetime.timedelta(days=1)
    m = _RELATIVE.match(t)
    if m:
        n = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
        if n < 1:
            raise QueryError(f"'{text}': the count must be at least 1")
        return today - datetime.timedelta(days=n - 1)
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.datetime.strptime(t, fmt).date()
        except ValueError:
            pass
    raise QueryError(f"cannot read '{text}' as a day: use {FORMATS}")


def local_zone_name() -> str:
    """This machine's IANA zone name (``$TZ``, else where ``/etc/localtime`` points), else UTC.

    Cheap on purpose (no ``zoneinfo`` import): the CLI calls it to send its zone to csmd.
    """
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and not tz.startswith("/"):
        return tz
    target = os.path.realpath(tz or "/etc/localtime")
    marker = "/zoneinfo/"
    if marker in target:
        return target.split(marker, 1)[1]
    return "UTC"

"""Times: what a person types after ``--since``/``--until``, what travels to csmd, what a person reads.

One grammar for every command. Calendar words name a day in the user's zone: ``today``,
``yesterday``, a date (``2026-11-01`` or ``20261101``), ``Nd``/``Nw`` (the last N days or
weeks, today included: ``1d`` is today, ``7d`` starts at local midnight six days ago). As
``--since`` a day is its first instant, as ``--until`` its end (the whole day is included).
Instants are instants: ``Nm``/``Nh`` (N minutes or hours ago) and a date and time
(``2026-11-01T14:30``, local unless it carries an offset such as ``+05:45`` or ``Z``).

The client reads them (it knows the zone) and sends csmd UTC instants as
``YYYY-MM-DDTHH:MM:SS``, which compare correctly as strings with the stored ISO-8601 UTC
timestamps (``2026-11-01T10:00:00.000Z``). A day is computed with the zone's real rules
(``zoneinfo``, or the C library for the machine's own zone, read the same way), so a DST day of
23 or 25 hours is still one day. Cheap to import on purpose: ``zoneinfo`` is loaded only when a zone is named.
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

FORMS = ("today, yesterday, a date (2026-11-01), a date and time (2026-11-01T14:30, 2026-11-01T14:30+05:45, "
         "…Z for UTC), Nm or Nh (the last N minutes or hours), Nd or Nw (the last N calendar days or weeks, "
         "today included)")
_COUNT = re.compile(r"^(\d+)\s*([mhdw])$")
_LONG_YEAR = re.compile(r"^[+-]?\d{5,}-")
_MAX_DIGITS = 9  # more is out of every range (and int() of thousands of digits is refused)
_WIRE = "seconds"


def parse(text: str, *, end: bool = False, zone: tzinfo | None = None, now: datetime | None = None) -> datetime:
    """The UTC instant ``text`` names, read in ``zone`` (None: this machine's zone).

    ``end``: a day stands for its end (the next day's midnight), so an ``--until`` day is included.
    Raises ``ValueError`` with a message for the user (unknown form, out of range).
    """
    word = text.strip().lower()
    now = now or datetime.now(timezone.utc)
    try:
        m = _COUNT.match(word)
        if m and len(m.group(1)) > _MAX_DIGITS or _LONG_YEAR.match(word):
            raise OverflowError
        if m and m.group(2) in "mh":
            return (now - timedelta(**{"minutes" if m.group(2) == "m" else "hours": int(m.group(1))})).astimezone(
                timezone.utc)
        today = now.astimezone(zone).date()
        day: date | None = None
        if word in ("today", "yesterday"):
            day = today - timedelta(days=word == "yesterday")
        elif m:
            days = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
            if days < 1:
                raise ValueError(f"{text!r}: the count of days must be at least 1 (1d is today)")
            day = today - timedelta(days=days - 1)
        else:
            day = _date(word)
        if day is not None:
            return _midnight(day + timedelta(days=end), zone)
        try:
            dt = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a time: use {FORMS}") from None
        return (dt if dt.tzinfo else _localize(dt, zone)).astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range (years 1 to 9999): use {FORMS}") from None


def _date(word: str) -> date | None:
    if not word[:1].isdigit() or len(word) not in (8, 10):
        return None
    try:
        return date.fromisoformat(word)
    except ValueError:
        return None


def _midnight(day: date, zone: tzinfo | None) -> datetime:
    """The first instant of ``day`` in ``zone`` (where DST skips midnight, the instant the day begins)."""
    return _localize(datetime.combine(day, time()), zone).astimezone(timezone.utc)


def _localize(wall: datetime, zone: tzinfo | None) -> datetime:
    """A wall-clock time in ``zone``; one that a DST gap skips is read with the offset before the gap.

    That is zoneinfo's reading (PEP 495, ``fold=0``), so a skipped midnight is the instant its day
    begins. The C library reads it with the offset after the gap, which lands on the day before:
    for this machine's own zone the other reading (``fold=1``) is taken then, so both agree.
    """
    if zone is not None:
        return wall.replace(tzinfo=zone)
    t = wall.astimezone()
    if t.replace(tzinfo=None) != wall:
        t = wall.replace(fold=1).astimezone()
    return t


def wire(dt: datetime) -> str:
    """An instant as csmd receives it: UTC, ``YYYY-MM-DDTHH:MM:SS``."""
    return dt.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec=_WIRE)


def from_wire(value: str) -> datetime:
    """An instant a client sent; ``ValueError`` when it is not one (a client that speaks another grammar)."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        dt = None
    if dt is None or len(value) != 19 or dt.tzinfo is not None:
        raise ValueError(f"{value!r} is not a UTC instant (YYYY-MM-DDTHH:MM:SS): csm and csmd differ in version")
    return dt.replace(tzinfo=timezone.utc)


def zone(name: str) -> ZoneInfo:
    """An IANA zone; ``ValueError`` with a message for the user when there is none of that name."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{name}': use an IANA name such as Europe/Berlin, or UTC") from None


def local_zone_name() -> str:
    """This machine's IANA zone name (``$TZ``, else where ``/etc/localtime`` points), else UTC.

    Sent to csmd where results are grouped by day (``csm query usage``).
    """
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and not tz.startswith("/"):
        return tz
    target = os.path.realpath(tz or "/etc/localtime")
    marker = "/zoneinfo/"
    if marker in target:
        return target.split(marker, 1)[1]
    return "UTC"


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

"""The filter options browsing commands share, declared once: ``--project`` and ``--since``/``--until``.

Every command that filters takes the same words with the same meaning (README, "Filters"). The
times are read here, where the user's zone is known, and csmd gets UTC instants; csmd applies
the one project rule (``csm.daemon.projects``). Output options live with the output
(``render.output_options``). The time module is imported only when a command runs with a
time: declaring the options costs ``csm status`` nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from datetime import datetime, tzinfo

F = TypeVar("F", bound=Callable[..., Any])
WHEN = "today, yesterday, 7d, 2w, 12h, 30m, 2026-11-01, 2026-11-01T14:30[+05:45]"


def project_option(fn: F) -> F:
    return click.option("--project", "-p", metavar="P",
                        help="Only projects whose folder name contains P, ignoring case (e.g. 'myrepo').")(fn)


def _read(value: str, flag: str, zone: tzinfo | None, end: bool = False) -> datetime:
    from csm.shared import timespec

    try:
        return timespec.parse(value, end=end, zone=zone)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=f"'{flag}'") from None


def time_options(zone_option: bool = False) -> Callable[[F], F]:
    """``--since``/``--until`` (and ``--tz`` where results are grouped by day), handed to the command
    as UTC wire instants; with ``zone_option`` days are read in ``--tz`` and the command gets the
    zone's name (this machine's when none is given)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, since: str | None, until: str | None, **kwargs: Any) -> Any:
            from csm.shared import timespec

            zone = None
            if zone_option:
                kwargs["tz"] = kwargs.get("tz") or timespec.local_zone_name()
                try:
                    zone = timespec.zone(kwargs["tz"])
                except ValueError as e:
                    raise click.BadParameter(str(e), param_hint="'--tz'") from None
            lo = None if since is None else _read(since, "--since", zone)
            hi = None if until is None else _read(until, "--until", zone, end=True)
            if lo and hi and hi < lo:
                raise click.BadParameter(f"{until!r} ends before --since {since!r} begins", param_hint="'--until'")
            return fn(*args, since=lo and timespec.wire(lo), until=hi and timespec.wire(hi), **kwargs)

        wrapped: Any = click.option("--until", metavar="WHEN",
                                    help="Only before this; a day (a date, today, 3d, …) is included whole.")(run)
        wrapped = click.option("--since", metavar="WHEN", help=f"Only from this time on: {WHEN}.")(wrapped)
        if zone_option:
            wrapped = click.option("--tz", metavar="ZONE",
                                   help="Time zone of days and weeks (IANA name). Default: this machine's.")(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate

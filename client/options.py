"""The filter options browsing commands share, declared once: ``--project``, ``--since``/``--until``
and the SESSION argument; with the shell completion of session ids and project names.

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


COMPLETION_TIMEOUT_S = 1.0
COMPLETIONS = 200


def _ask(sql: str, incomplete: str) -> list[str]:
    """Completions from csmd; none, at once, when it is not running (a shell must never hang on Tab)."""
    from csm.client.transport import request
    from csm.shared.protocol import Query, Rows

    try:
        reply = request(Query(sql=sql, params=[incomplete], max_rows=COMPLETIONS), timeout_s=COMPLETION_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - any failure means no completions, never a traceback in the shell
        return []
    return [str(r[0]) for r in reply.rows] if isinstance(reply, Rows) else []


def complete_session(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Session ids that start with what was typed, most recent first (``agent-`` ids for subagents)."""
    return _ask("SELECT session_id FROM sessions WHERE substr(session_id, 1, length(?1)) = ?1 "
                "GROUP BY session_id ORDER BY max(last_activity) DESC", incomplete)


def complete_project(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Project folder names that contain what was typed, ignoring case (the --project rule), most recent first."""
    return _ask("SELECT project FROM projects WHERE instr(lower(project), lower(?1)) > 0 "
                "ORDER BY last_activity DESC", incomplete)


def project_option(fn: F) -> F:
    return click.option("--project", "-p", metavar="P", shell_complete=complete_project,
                        help="Only projects whose folder name contains P, ignoring case (e.g. 'myrepo').")(fn)


def session_argument(name: str = "session", required: bool = True) -> Callable[[F], F]:
    """A session id, unique prefix or transcript path, completed from csmd's sessions."""
    return click.argument(name, required=required, shell_complete=complete_session)


def read_time(value: str, flag: str, zone: tzinfo | None = None, end: bool = False) -> datetime:
    """A WHEN given to ``flag``, in the one time grammar; a bad one is that option's error."""
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
            lo = None if since is None else read_time(since, "--since", zone)
            hi = None if until is None else read_time(until, "--until", zone, end=True)
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

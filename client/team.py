"""``csm team …`` and the ``--team`` side of ``csm query usage|sessions|search``.

``status`` and ``resync`` ask csmd (it runs the mirror); ``init`` and the ``--team`` reads connect to
PostgreSQL from here, as the admin and as the member respectively (``csm.team.read`` says why).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
import msgspec

from csm.client import render
from csm.client.transport import request
from csm.shared import protocol
from csm.shared.config import Team
from csm.shared.errors import DaemonNotRunning, TeamUnavailable

if TYPE_CHECKING:
    import psycopg


def configured() -> Team | None:
    """The ``[team]`` settings of the running csmd (which may have been started with ``--config``), else the file's."""
    try:
        reply = request(protocol.GetConfig(), timeout_s=5.0)
        assert isinstance(reply, protocol.ConfigReply)
        return of(reply)
    except DaemonNotRunning:
        from csm.shared.config import resolve

        return resolve().config.team


def of(reply: protocol.ConfigReply) -> Team | None:
    """The ``[team]`` settings in a config reply (csmd's, or one the web app built from the file)."""
    value = reply.settings["team"].value if "team" in reply.settings else None
    return None if value is None else msgspec.convert(value, Team)


@contextmanager
def team_db(team: Team | None = None, conninfo: str | None = None) -> Iterator[psycopg.Connection]:
    """A connection to the team's PostgreSQL; its errors become one line (``TeamUnavailable``)."""
    from csm.team import read

    conn = read.connect(team if conninfo is None else Team(dsn=conninfo))
    import psycopg

    try:
        with conn:
            yield conn
    except psycopg.Error as e:
        hint = " (has 'csm team init' been run?)" if isinstance(e, psycopg.errors.UndefinedTable) else ""
        raise TeamUnavailable(f"team database: {' '.join(str(e).split())}{hint}") from None


@click.group("team")
def team() -> None:
    """Team mode: csmd mirrors what you share into the team's PostgreSQL ([team] in config.toml).

    \b
    Examples:
      csm team status
      csm query usage --team --by member --since 30d
      csm team init --dsn 'postgresql://admin@db/csm' --member alice --member bob   # once, by the DB admin
    """


@team.command("init")
@click.option("--dsn", metavar="CONNINFO", help="The admin's libpq URL or conninfo (default: [team]'s connection).")
@click.option("--member", "members", multiple=True, metavar="NAME",
              help="A member whose rows a login role may write; repeatable.")
@click.option("--role", metavar="ROLE",
              help="The login role of the --member names (default: a role per member, named like it).")
def init(dsn: str | None, members: tuple[str, ...], role: str | None) -> None:
    """Create or upgrade the team schema, its roles and row-level security (run by the database admin).

    Applies the schema's numbered migrations (only those not applied yet), creates the group
    roles csm_team (members: write their own rows, read the team's) and csm_reader (dashboards:
    read only), and lets each --member's login role write that member's rows. Roles are made
    without a password: set one with psql's \\password, or use certificate or peer authentication.

    \b
    Examples:
      csm team init --dsn 'postgresql://postgres@db.example/csm' --member alice --member bob
      psql -c 'GRANT csm_reader TO grafana'
    """
    from csm.team import schema

    with team_db(configured() if dsn is None else None, dsn) as pg:
        applied = schema.migrate(pg)
        for member in members:
            schema.add_member(pg, member, role)
    click.echo(f"schema: {', '.join(applied) if applied else 'up to date'}")
    for member in members:
        click.echo(f"member {member}: written by role {role or member}")


@team.command("status")
@render.output_options
def status(fmt: str | None) -> None:
    """Whether csmd's mirror is connected, how far behind it is (lines and time), and its last error.

    \b
    Example:
      csm team status --json | jq .behind_rows
    """
    reply = request(protocol.TeamStatus(), timeout_s=10.0)
    assert isinstance(reply, protocol.TeamStatusReply)
    if fmt is not None:
        render.emit_record({name: msgspec.to_builtins(getattr(reply, name)) for name in reply.__struct_fields__}, fmt)
        return
    if not reply.configured:
        click.echo("team mode is off: csmd has no [team] section in its config.toml")
        return
    behind = "caught up" if not reply.behind_rows else (
        f"{reply.behind_rows:,} lines" + (f", oldest from {reply.behind_s:,.0f} s ago" if reply.behind_s else ""))
    rows: list[tuple[str, Any]] = [
        ("database", reply.target),
        ("as", f"{reply.member}@{reply.machine}, sharing {reply.share}"),
        ("connected", "yes" if reply.connected else "no"),
        ("behind", behind),
        ("sent", f"{reply.rows_sent:,} rows since csmd started" + (
            f", last at {reply.last_sent_at}" if reply.last_sent_at else "")),
    ]
    if reply.last_error:
        rows.append(("error", reply.last_error))
    for k, v in rows:
        click.echo(f"{k:<10} {v}")


@team.command("resync")
def resync() -> None:
    """Send the whole history to the team's PostgreSQL again, with what is shared now.

    What is shared applies to new lines as they come; after widening it (usage -> sessions ->
    transcripts) or changing the project patterns, resync sends the older lines too. Rows already
    there are updated in place, never doubled; nothing is ever deleted there.
    """
    reply = request(protocol.TeamResync(), timeout_s=10.0)
    if isinstance(reply, protocol.TeamStatusReply):
        raise TeamUnavailable("team mode is off: csmd has no [team] section in its config.toml")
    click.echo("csmd will send the whole history again; 'csm team status' shows how far it is")


def usage(by: str, since: str | None, until: str | None, tz: str, project: str | None, fmt: str | None) -> None:
    from csm.team import read

    if by not in read.TEAM_GROUPS:
        raise click.BadParameter(f"with --team, one of: {', '.join(read.TEAM_GROUPS)}", param_hint="'--by'")
    with team_db(configured()) as pg:
        columns, rows = read.usage(pg, by, since, until, tz, project)
    if fmt is not None:
        render.emit_rows(columns, rows, fmt)
    elif not rows:
        click.echo("no API responses in the team database in this range", err=True)
    else:
        render.usage_table(columns, rows)


def sessions(project: str | None, since: str | None, until: str | None, limit: int, fmt: str | None) -> None:
    from csm.team import read

    with team_db(configured()) as pg:
        columns, rows = read.sessions(pg, project, since, until, limit)
    render.emit_rows(columns, rows, fmt)


def search(text: str, project: str | None, since: str | None, until: str | None, limit: int,
           fmt: str | None) -> None:
    from csm.team import read

    with team_db(configured()) as pg:
        columns, rows = read.search(pg, text, project, since, until, limit)
    if fmt is not None or rows:
        render.emit_rows(columns, rows, fmt)
    else:
        click.echo("no matches in the team database (only members sharing transcripts are searched)", err=True)

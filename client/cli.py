"""``csm``: the command line, a thin client of csmd's control socket.

It imports click, msgspec and ``csm.shared`` only (pyzmq when it sends a request),
never the daemon's parts, so it starts fast: the commands that live in other modules
(``service``, ``db``, ``export``, ``watch`` and the browsing queries) are imported only when
they run, or for ``--help`` (``LazyGroup``), so ``csm status`` pays for none of them. Every error csm expects is a
``CsmError`` turned into one line on stderr and an exit code in ``main``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from csm.client import options, render
from csm.client.transport import request
from csm.shared import __version__, protocol
from csm.shared.errors import CsmError, DaemonNotRunning
from csm.shared.streams import whole_writes

CONTEXT = {"help_option_names": ["-h", "--help"]}


class LazyGroup(click.Group):
    """A group whose commands named in ``lazy`` ("module:attribute") are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, attr = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def resolve_command(
        self, ctx: click.Context, args: list[str],
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """``csm search`` says that it is ``csm query search`` (a subcommand of a group already imported)."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            name = args[0] if args else ""
            for group_name, group in self.commands.items():
                if isinstance(group, click.Group) and name in group.list_commands(ctx):
                    raise click.UsageError(f"No such command '{name}'; it is 'csm {group_name} {name}'.", ctx) from None
            raise


@click.group(cls=LazyGroup, context_settings=CONTEXT, lazy={
    "service": "csm.client.service:service", "db": "csm.client.db:db", "watch": "csm.client.browse:watch",
    "export": "csm.client.export:export", "restore": "csm.client.restore:restore", "serve": "csm.web.command:serve",
    "team": "csm.client.team:team", "archive": "csm.client.archive:archive",
})
@click.version_option(__version__, prog_name="csm")
def cli() -> None:
    """csm: ask questions of your whole Claude Code history.

    csmd (the daemon) keeps a SQLite archive in step with Claude Code's transcripts;
    these commands ask it.

    \b
    Examples:
      csm status
      csm sync --now
      csm query sql "SELECT type, count(*) FROM lines GROUP BY type"
    """


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _backlog_line(b: protocol.Backlog) -> str:
    if b.counting:
        return f"listing files: {b.files_total} to read so far, {_human_bytes(b.bytes_total)}"
    eta = f", ETA {_duration(b.eta_s)}" if b.eta_s is not None else ""
    return (f"{b.files_done}/{b.files_total} files, {_human_bytes(b.bytes_done)}/{_human_bytes(b.bytes_total)} "
            f"at {_human_bytes(b.rate_bps)}/s{eta}")


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _bar(b: protocol.Backlog, width: int = 30) -> str:
    frac = 0.0 if b.counting else (b.bytes_done / b.bytes_total if b.bytes_total else 1.0)
    return f"[{'#' * int(frac * width):<{width}}] {_backlog_line(b)}"


@cli.command()
@render.output_options(formats=("prometheus",))
def status(fmt: str | None) -> None:
    """Show what csmd is doing and what the archive holds.

    Also how long Claude Code keeps transcripts (cleanupPeriodDays), how many sessions only
    the archive still holds, and whether Claude Code had deleted sessions before csm could
    archive them. --format prometheus prints the figures for node_exporter's textfile
    collector (csmd not running is csm_up 0, exit status 0).

    \b
    Examples:
      csm status --json | jq .events
      csm status --format prometheus > /var/lib/node_exporter/textfile/csm.prom.$$ && mv ...
    """
    try:
        reply = request(protocol.Status(), timeout_s=5.0)
    except DaemonNotRunning as e:
        if fmt != "prometheus":
            raise
        from csm.client import metrics

        click.echo(f"csm: {e}", err=True)
        click.echo(metrics.exposition(None), nl=False)
        return
    assert isinstance(reply, protocol.StatusReply)
    if fmt == "prometheus":
        from csm.client import metrics

        click.echo(metrics.exposition(reply), nl=False)
        return
    if fmt is not None:
        render.emit_record(render.plain(reply), fmt)
        return
    rows: list[tuple[str, Any]] = [
        ("csmd", f"{reply.version}, pid {reply.pid}, up {reply.uptime_s:.0f} s"),
        ("state", reply.state),
        ("watcher", reply.watch_mode + (f", restarted {reply.watcher_restarts} times"
                                        if reply.watcher_restarts else "")),
        ("database", reply.db_path + (f" (quick_check ok at {reply.db_checked_at})"
                                      if reply.db_checked_at and not reply.db_problem else "")),
        ("roots", ", ".join(reply.roots) or "(none)"),
        ("files", f"{reply.files}" + (f" (+{reply.files_gone} gone, rows kept)" if reply.files_gone else "")),
        ("sessions", f"{reply.sessions}" + (f" ({reply.sessions_gone} with source file gone)"
                                            if reply.sessions_gone else "")),
        ("lines", reply.events),
        *([("archived", f"{reply.archived_sessions} sessions, {reply.archived_lines} lines in archive files "
                        "(csm archive list)")] if reply.archived_sessions else []),
        ("bad lines", f"{reply.errors}" + (" (csm query errors)" if reply.errors else "")),
        *([("derived", f"{reply.line_errors} stored lines failed: usage, search text or figures "
                       "(csm query errors)")] if reply.line_errors else []),
        ("last sync", reply.last_sync_at or "never"),
        ("retention", _retention_line(reply)),
    ]
    if reply.backlog is not None:
        rows.append(("backlog", _backlog_line(reply.backlog)))
    if reply.last_error:
        rows.append(("error", reply.last_error))
    if reply.db_problem:
        rows.append(("db problem", reply.db_problem))
    lost = reply.lost_before_csm
    if lost and lost.prompts and lost.first and lost.last:
        rows.append(("lost", f"{lost.sessions} sessions ({lost.prompts} prompts typed {lost.first[:10]} to "
                             f"{lost.last[:10]}) deleted by Claude Code before csm archived them"))
    for k, v in rows:
        click.echo(f"{k:<10} {v}")
    if lost and lost.prompts and _first_time(f"lost {lost.first} {lost.last} {lost.sessions} {lost.prompts} {reply.db_path}"):
        click.echo(f"csm: warning: Claude Code had deleted {lost.sessions} sessions before csm archived them "
                   "(they are named in its history.jsonl, their transcripts are gone); csm keeps everything from "
                   "now on. Raise cleanupPeriodDays in Claude Code's settings.json to keep transcripts longer.",
                   err=True)


def _first_time(warning: str) -> bool:
    """Whether ``warning`` is new to this user: one is given once, then only its row stays."""
    from csm.shared import paths

    seen = paths.warnings_seen_path()
    try:
        known = seen.read_text().splitlines()
    except OSError:
        known = []
    if warning in known:
        return False
    try:
        seen.parent.mkdir(parents=True, exist_ok=True)
        with open(seen, "a") as f:
            f.write(warning + "\n")
    except OSError:  # a read-only home: warn every time rather than never
        pass
    return True


def _retention_line(r: protocol.StatusReply) -> str:
    days = r.cleanup_period_days
    where = "default" if r.cleanup_period_source == "default" else f"cleanupPeriodDays in {r.cleanup_period_source}"
    what = ("Claude Code writes no transcripts" if days == 0
            else f"Claude Code deletes transcripts idle {days} days")
    n = r.sessions_gone
    return f"{what} ({where}); {n} session{'' if n == 1 else 's'} kept only in the archive"


@cli.command()
@click.option("--now", is_flag=True, help="Wait for the sync to finish and report what it did.")
@render.output_options
def sync(now: bool, fmt: str | None) -> None:
    """Rescan every transcript root and ingest what is new.

    csmd does this by itself as files change; use it after restoring files or to be
    sure a script sees the latest lines. With --now on a terminal (stderr), a progress
    bar shows the daemon's figures (files and bytes done, rate, ETA) as they come,
    including those of work already under way, such as the first sync of a large history.

    \b
    Example:
      csm sync --now
    """
    progress = now and fmt is None and sys.stderr.isatty()

    def draw(p: protocol.Progress) -> None:
        click.echo(f"\r{_bar(p.backlog)}\033[K", nl=False, err=True)

    if not now:
        request(protocol.Sync(wait=False), timeout_s=5.0)
        click.echo("sync requested; 'csm status' shows its progress")
        return
    reply = request(protocol.Sync(), timeout_s=60.0, on_progress=draw if progress else None)
    if progress:
        click.echo("\r\033[K", nl=False, err=True)
    assert isinstance(reply, protocol.SyncReply)
    if fmt is not None:
        render.emit_record(render.plain(reply), fmt)
    else:
        click.echo(f"scanned {reply.files_scanned} files ({reply.files_changed} changed), ingested "
                   f"{reply.lines_ingested} lines, {reply.errors} bad lines, in {reply.seconds:.2f} s")


@cli.group("config")
def config_group() -> None:
    """csmd's settings: config.toml, command-line flags, defaults.

    \b
    Examples:
      csm config show                 # each effective value and where it came from
      csm config show --file new.toml # check a file before csmd reads it
      $EDITOR "$(csm config path)"
    """


def _config(file: str | None) -> tuple[protocol.ConfigReply, str | None]:
    """The running csmd's settings, else (or with ``file``) those read here; and why it was read here."""
    if file is None:
        try:
            reply = request(protocol.GetConfig(), timeout_s=5.0)
            assert isinstance(reply, protocol.ConfigReply)
            return reply, None
        except DaemonNotRunning:
            why = "csmd is not running"
    else:
        why = "--file given"
    from pathlib import Path

    from csm.shared import config as config_mod

    r = config_mod.resolve(Path(file) if file else None)
    return protocol.ConfigReply(pid=0, config_file=r.file, config_file_exists=r.file_exists,
                                config_file_source=r.file_source, settings=r.sources), why


def _value(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(map(str, v)) or "(none)"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


@config_group.command("show")
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Read this config file here instead of "
              "asking csmd (checks it: a bad key or value fails with its line).")
@render.output_options
def config_show(file: str | None, fmt: str | None) -> None:
    """Show each effective setting and where it came from.

    Asks the running csmd, which knows its command-line flags; when csmd is not running
    (or with --file), reads the config file here, as csmd would at start without flags.
    The first line (or "from" in JSON) says which. Sources: default, file (path:line),
    environment (CLAUDE_CONFIG_DIR for roots), command line (the csmd flag).

    \b
    Examples:
      csm config show
      csm config show --json | jq -r .settings.rescan_interval_s.value
    """
    reply, local = _config(file)
    settings = render.plain(reply.settings)
    if fmt is not None:
        render.emit_record({
            "from": "file" if local else "csmd", "pid": None if local else reply.pid,
            "config_file": reply.config_file, "config_file_exists": reply.config_file_exists,
            "config_file_source": reply.config_file_source, "settings": settings,
        }, fmt)
        return
    if local:
        click.echo(f"{local}: read here from the config file and environment (no csmd flags)")
    else:
        click.echo(f"from the running csmd (pid {reply.pid})")
    via = " (--config)" if reply.config_file_source == "command line" else ""
    click.echo(f"config file: {reply.config_file}{via}{'' if reply.config_file_exists else ' (not found)'}")
    rows = [(k, _value(s["value"]), s["source"] + (f" ({s['where']})" if s.get("where") else ""))
            for k, s in settings.items()]
    render.table(["setting", "value", "source"], rows)


@config_group.command("set")
@click.argument("key")
@click.argument("value")
def config_set(key: str, value: str) -> None:
    """Set KEY to VALUE in the config file and have csmd apply it.

    The file is checked by the same rules csmd uses before it is replaced (a bad value
    changes nothing); its other lines and comments are kept. roots, rescan_interval_s,
    poll_interval_s and log_level apply at once; the others when csmd restarts.

    \b
    Examples:
      csm config set rescan_interval_s 30
      csm config set roots ~/.claude/projects,~/work/claude/projects
    """
    from pathlib import Path

    from csm.shared import config as config_mod

    reply, local = _config(None)
    resolved = config_mod.write(Path(reply.config_file), {key: config_mod.parse_value(key, value)})
    s = resolved.sources[key]
    click.echo(f"{key} = {_value(s.value)} in {resolved.file}")
    if local:
        click.echo(f"{local}: it applies when csmd starts", err=True)
        return
    done = request(protocol.ReloadConfig(), timeout_s=10.0)
    assert isinstance(done, protocol.Ok)
    click.echo(f"csmd: {done.message}")


@config_group.command("path")
def config_path() -> None:
    """Print the config file's path (the running csmd's, else the default), whether or not it exists.

    \b
    Example:
      $EDITOR "$(csm config path)"
    """
    reply, _ = _config(None)
    click.echo(reply.config_file)


@cli.group(cls=LazyGroup, lazy={
    "sessions": "csm.client.browse:sessions", "show": "csm.client.browse:show", "search": "csm.client.browse:search",
})
def query() -> None:
    """Ask the archive questions (read-only)."""


@query.command("sql")
@click.argument("sql")
@click.option("--param", "-p", "params", multiple=True, help="A value for a ? placeholder. Repeatable.")
@click.option("--max-rows", type=click.IntRange(1), default=10_000, show_default=True,
              help="Stop after this many rows (and say so).")
@render.output_options
def query_sql(sql: str, params: tuple[str, ...], max_rows: int, fmt: str | None) -> None:
    """Run read-only SQL against the archive.

    The public views are lines, sessions, projects, usage and session_usage (see README). Writes are refused.

    \b
    Examples:
      csm query sql "SELECT project, sessions FROM projects ORDER BY last_activity DESC"
      csm query sql --json "SELECT * FROM sessions WHERE session_id LIKE ?" -p 'abc%'
    """
    reply = request(protocol.Query(sql=sql, params=list(params), max_rows=max_rows), timeout_s=30.0)
    assert isinstance(reply, protocol.Rows)
    render.emit_rows(reply.columns, reply.rows, fmt)
    if reply.truncated:
        n = len(reply.rows)
        if reply.limit == "bytes":
            why = "csmd's query_max_bytes setting; select fewer or smaller columns"
        else:
            why = "--max-rows" if n >= max_rows else "csmd's query_max_rows setting"
        click.echo(f"csm: output stopped at {n} rows ({why})", err=True)




@query.command("usage")
@click.option("--by", type=click.Choice(["day", "week", "month", "session", "project", "model", "member", "machine"]),
              default="day", show_default=True, help="Group by calendar day, week (from Monday), month, session, "
              "project or model; with --team also member or machine.")
@click.option("--team", "team", is_flag=True, help="The whole team's usage, from the team's PostgreSQL.")
@options.project_option
@options.time_options(zone_option=True)
@render.output_options
def query_usage(by: str, team: bool, since: str | None, until: str | None, tz: str, project: str | None,
                fmt: str | None) -> None:
    """Tokens and cost of every API response, counted once.

    Input, output, cache-creation and cache-read tokens and the cost in USD from csm's
    price table. A model the table does not price keeps its tokens and is marked
    "unpriced" (never counted as $0). See README, "Token accounting", for what counts.

    \b
    Examples:
      csm query usage                          # per day, in your time zone
      csm query usage --by month --tz UTC
      csm query usage --since 7d --by model
      csm query usage --since 12h -p myrepo
      csm query usage --by session --since 2026-02-01 --until 2026-02-14 --json
      csm query usage --team --by member --since 30d
    """
    if team:
        from csm.client import team as team_mod

        return team_mod.usage(by, since, until, tz, project, fmt)
    if by in ("member", "machine"):
        raise click.BadParameter(f"--by {by} needs --team (your own archive is one member's, one machine's)",
                                 param_hint="'--by'")
    req = protocol.UsageReport(by=by, since=since, until=until, tz=tz, project=project)
    reply = request(req, timeout_s=30.0)
    assert isinstance(reply, protocol.UsageRows)
    if fmt is not None:
        render.emit_rows(reply.columns, reply.rows, fmt)
    elif not reply.rows:
        click.echo("no API responses recorded in this range", err=True)
    else:
        render.usage_table(reply.columns, reply.rows)
    if reply.unpriced_models:
        click.echo(f"* unpriced (no price in csm's table of {reply.prices_updated}): "
                   f"{', '.join(reply.unpriced_models)}; their tokens are shown, their cost is not in cost_usd",
                   err=True)


@query.command("errors")
@click.option("--max-rows", type=click.IntRange(1), default=10_000, show_default=True,
              help="Stop after this many rows (and say so).")
@render.output_options
def query_errors(max_rows: int, fmt: str | None) -> None:
    """List the bad lines csmd skipped: file, byte offset, length, why, first bytes.

    A bad line (not JSON, not an object, not UTF-8, NUL bytes) is recorded once and
    skipped; every other line of its file is stored. An offset left empty means the
    whole file could not be read. A line that is stored but whose usage, search text or
    session figures could not be derived (a token count SQLite cannot sum) is listed
    too, its error naming the part and ending "(the line is stored)".

    \b
    Examples:
      csm query errors
      csm query errors --json | jq '.[].error'
    """
    reply = request(protocol.ListErrors(max_rows=max_rows), timeout_s=30.0)
    assert isinstance(reply, protocol.Rows)
    render.emit_rows(reply.columns, reply.rows, fmt)
    if reply.truncated:
        click.echo(f"csm: output stopped at {max_rows} rows (--max-rows)", err=True)


def main() -> None:
    whole_writes()
    try:
        cli(prog_name="csm", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except click.BadParameter as e:  # a value the message explains: one line, not the usage
        click.echo(f"csm: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except CsmError as e:
        if os.environ.get("CSM_RAISE_ERRORS"):
            raise
        click.echo(f"csm: {e}", err=True)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)

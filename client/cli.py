"""``csm``: the command line, a thin client of csmd's control socket.

It imports click, msgspec and ``csm.shared`` only (pyzmq when it sends a request),
never the daemon's parts, so it starts fast. Every error csm expects is a
``CsmError`` turned into one line on stderr and an exit code in ``main``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
import msgspec

from csm.client import render
from csm.client.db import db
from csm.client.transport import request
from csm.shared import __version__, protocol
from csm.shared.errors import CsmError

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
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
    eta = f", ETA {b.eta_s:.0f} s" if b.eta_s is not None else ""
    return (f"{b.files_done}/{b.files_total} files, {_human_bytes(b.bytes_done)}/{_human_bytes(b.bytes_total)} "
            f"at {_human_bytes(b.rate_bps)}/s{eta}")


@cli.command()
@click.option("json_", "--json", is_flag=True, help="Output JSON.")
def status(json_: bool) -> None:
    """Show what csmd is doing and what the archive holds.

    \b
    Example:
      csm status --json | jq .events
    """
    reply = request(protocol.Status(), timeout_s=5.0)
    assert isinstance(reply, protocol.StatusReply)
    if json_:
        render.emit_json(msgspec.to_builtins(reply))
        return
    rows: list[tuple[str, Any]] = [
        ("csmd", f"{reply.version}, pid {reply.pid}, up {reply.uptime_s:.0f} s"),
        ("state", reply.state + (f" ({reply.watch_mode})" if reply.watch_mode != "watching" else "")),
        ("database", reply.db_path),
        ("roots", ", ".join(reply.roots) or "(none)"),
        ("files", f"{reply.files}" + (f" (+{reply.files_gone} gone, rows kept)" if reply.files_gone else "")),
        ("sessions", f"{reply.sessions}" + (f" ({reply.sessions_gone} with source file gone)"
                                            if reply.sessions_gone else "")),
        ("lines", reply.events),
        ("bad lines", f"{reply.errors}" + (" (csm query errors)" if reply.errors else "")),
        ("last sync", reply.last_sync_at or "never"),
    ]
    if reply.backlog is not None:
        rows.append(("backlog", _backlog_line(reply.backlog)))
    if reply.last_error:
        rows.append(("error", reply.last_error))
    for k, v in rows:
        click.echo(f"{k:<10} {v}")


@cli.command()
@click.option("--now", is_flag=True, help="Wait for the sync to finish and report what it did.")
@click.option("json_", "--json", is_flag=True, help="Output JSON.")
def sync(now: bool, json_: bool) -> None:
    """Rescan every transcript root and ingest what is new.

    csmd does this by itself as files change; use it after restoring files or to be
    sure a script sees the latest lines. On a terminal, --now draws a progress bar.

    \b
    Example:
      csm sync --now
    """
    progress = now and not json_ and sys.stderr.isatty()

    def draw(p: protocol.Progress) -> None:
        b = p.backlog
        frac = b.bytes_done / b.bytes_total if b.bytes_total else 1.0
        bar = "#" * int(frac * 30)
        click.echo(f"\r[{bar:<30}] {_backlog_line(b)}\033[K", nl=False, err=True)

    if not now:
        request(protocol.Sync(wait=False), timeout_s=5.0)
        click.echo("sync requested; 'csm status' shows its progress")
        return
    reply = request(protocol.Sync(), timeout_s=60.0, on_progress=draw if progress else None)
    if progress:
        click.echo("\r\033[K", nl=False, err=True)
    assert isinstance(reply, protocol.SyncReply)
    if json_:
        render.emit_json(msgspec.to_builtins(reply))
    else:
        click.echo(f"scanned {reply.files_scanned} files ({reply.files_changed} changed), ingested "
                   f"{reply.lines_ingested} lines, {reply.errors} bad lines, in {reply.seconds:.2f} s")


@cli.group()
def query() -> None:
    """Ask the archive questions (read-only)."""


@query.command("sql")
@click.argument("sql")
@click.option("--param", "-p", "params", multiple=True, help="A value for a ? placeholder. Repeatable.")
@click.option("--max-rows", type=click.IntRange(1), default=10_000, show_default=True,
              help="Stop after this many rows (and say so).")
@render.format_options
def query_sql(sql: str, params: tuple[str, ...], max_rows: int, fmt: str | None) -> None:
    """Run read-only SQL against the archive.

    The public views are lines, sessions and projects (see README). Writes are refused.

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


cli.add_command(db)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
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

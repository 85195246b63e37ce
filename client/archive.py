"""``csm archive``: old sessions moved into yearly archive files, and the list of those files.

csmd does the moving (it is the one writer) and answers when it is done; everything still reads
the archived sessions (see ``daemon/archive.py`` and ``daemon/attach.py``).
"""

from __future__ import annotations

import click

from csm.client import render
from csm.client.options import WHEN, read_time
from csm.client.transport import request
from csm.shared import protocol

ARCHIVE_TIMEOUT_S = 300.0
"""The longest wait for a word from csmd: it reports progress every second while it moves sessions, but
moves only while no new lines arrive (they go first)."""


@click.group(invoke_without_command=True)
@click.option("--before", metavar="WHEN", help=f"Move the sessions that ended before this: {WHEN}.")
@render.output_options
@click.pass_context
def archive(ctx: click.Context, before: str | None, fmt: str | None) -> None:
    """Move whole old sessions into archive files beside the database.

    Sessions whose last line and transcript file are older than --before move, with all their
    lines, into one file per year of their end (csm-archive-2025.db beside csm.db), compressed
    and read-only. Every command and page still reads them: show, search, export, usage, csm
    query sql. A session that receives new lines later keeps them in the main database until
    it is archived again. Safe to interrupt: a line is always in exactly one place.

    \b
    Examples:
      csm archive --before 2025-01-01
      csm archive --before 365d --json
      csm archive list
    """
    if ctx.invoked_subcommand is not None:
        return
    if before is None:
        raise click.UsageError("give --before WHEN (e.g. --before 2025-01-01), or 'csm archive list'")
    from csm.shared import timespec

    instant = timespec.wire(read_time(before, "--before"))
    reply = request(protocol.Archive(before=instant), timeout_s=ARCHIVE_TIMEOUT_S)
    assert isinstance(reply, protocol.ArchiveReply)
    if fmt is not None:
        render.emit_record(render.plain(reply), fmt)
        return
    click.echo(f"moved {reply.sessions} sessions ({reply.lines} lines) that ended before {instant} UTC "
               f"in {reply.seconds:.1f} s")
    if reply.skipped:
        click.echo(f"left for later: {reply.skipped_why}")
    _table(reply.archives)


@archive.command("list")
@render.output_options
def archive_list(fmt: str | None) -> None:
    """List the archive files: sessions, lines, the time they span, size, and any problem.

    \b
    Examples:
      csm archive list
      csm archive list --json | jq '.[] | select(.problem)'
    """
    reply = request(protocol.ArchiveList(), timeout_s=30.0)
    assert isinstance(reply, protocol.ArchiveReply)
    if fmt is not None:
        render.emit_rows(COLUMNS, [_row(a) for a in reply.archives], fmt)
        return
    if not reply.archives:
        click.echo("no archives yet (csm archive --before WHEN makes them)")
        return
    _table(reply.archives)


COLUMNS = ["name", "file", "sessions", "lines", "first", "last", "bytes", "problem"]


def _row(a: protocol.ArchiveInfo) -> list[object]:
    return [a.name, a.file, a.sessions, a.lines, a.first, a.last, a.bytes, a.problem]


def _table(archives: list[protocol.ArchiveInfo]) -> None:
    from csm.shared import timespec

    rows = [[a.file, a.sessions, a.lines, f"{timespec.local(a.first)} .. {timespec.local(a.last)}",
             f"{a.bytes / 2**20:.1f} MB", a.problem or "ok"] for a in archives]
    render.table(["file", "sessions", "lines", "sessions span", "size", "state"], rows, right=[1, 2, 4])

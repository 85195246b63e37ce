"""Browsing commands: ``csm query sessions|show|search`` and ``csm watch``.

Each sends one typed request to csmd and lays out the answer; the daemon does the work
(daemon/browse.py, daemon/search.py, daemon/watch.py).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from csm.client import render
from csm.client.options import project_option, session_argument, time_options
from csm.client.transport import conversation, request, subscribe
from csm.shared import protocol, timespec

MARKS = ("\u00ab", "\u00bb")
ENTRY_COLUMNS = list(protocol.Entry.__struct_fields__)


def _tokens(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else ""


def _cost(cost: Any, tokens: Any) -> str:
    if isinstance(cost, (int, float)):
        return f"${cost:,.2f}"
    return "unpriced" if tokens else ""


@click.command("sessions")
@project_option
@time_options()
@click.option("--limit", "-n", type=click.IntRange(1), default=50, show_default=True, help="At most this many.")
@click.option("--team", "team", is_flag=True, help="The team's shared sessions, from the team's PostgreSQL.")
@render.output_options
def sessions(project: str | None, since: str | None, until: str | None, limit: int, team: bool,
             fmt: str | None) -> None:
    """List sessions, most recent activity first.

    Tokens and cost include the session's subagents; a session whose transcript Claude
    Code has deleted is still listed (file: gone). Subagents are listed on their own
    only when their parent session is not in the archive.

    \b
    Examples:
      csm query sessions --since 7d
      csm query sessions -p myrepo --json | jq '.[0].session_id'
      csm query sessions --team --since 7d
    """
    if team:
        from csm.client import team as team_mod

        return team_mod.sessions(project, since, until, limit, fmt)
    reply = request(protocol.Sessions(project=project, since=since, until=until, limit=limit))
    assert isinstance(reply, protocol.Rows)
    if fmt is not None:
        render.emit_rows(reply.columns, reply.rows, fmt)
        return
    cols = ["session", "project", "title", "started", "last activity", "msgs", "tokens", "cost", "file"]
    rows = [[render.short_id(sid), proj, title, timespec.local(start), timespec.local(last), msgs, _tokens(tok),
             _cost(cost, tok), "" if present else "gone"]
            for sid, proj, title, start, last, msgs, tok, cost, present, *_ in reply.rows]
    # The id, times and figures identify and describe a row: the title gives up room first, then
    # the project (its end, the repository's name, kept); on a narrow terminal "started" goes.
    render.table(cols, rows, right=(5, 6, 7), shrink=(2, 1), keep_end=(1,), drop=(3,))


@click.command("show")
@session_argument()
@click.option("--full", is_flag=True, help="Include tool input and output.")
@render.output_options(paged=True)
def show(session: str, full: bool, fmt: str | None) -> None:
    """Show a session's conversation: prompts, answers, one line per tool call.

    SESSION is a session id or a unique prefix of one (as git takes short hashes), or the
    transcript's path (for an id found in several places: a copied project folder, two roots).
    Subagents appear nested under the call that started them. --json prints the session
    and its entries; --jsonl and --csv one entry a line, with the keys 'csm watch' uses.

    \b
    Examples:
      csm query show 29ccd257
      csm query show 29ccd257 --full | less
    """
    from csm.client import layouts

    from csm.client.export import target_arg

    reply = conversation(protocol.Show(session=target_arg(session), full=full))
    if fmt == "json":
        render.emit_json(render.plain(reply))
        return
    if fmt is not None:
        render.emit_rows(ENTRY_COLUMNS, [list(render.plain(e).values()) for e in reply.entries], fmt)
        return
    with render.paged():
        for chunk in layouts.text(reply, render.color()):
            click.echo(chunk)


@click.command("search")
@click.argument("text")
@project_option
@time_options()
@click.option("--include-tools", is_flag=True, help="Also search tool input and output (commands, files, results).")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, show_default=True, help="At most this many.")
@click.option("--team", "team", is_flag=True, help="Search the team's shared transcripts (PostgreSQL full-text "
              "search: words, \"phrases\", OR, -word).")
@render.output_options(paged=True)
def search(text: str, project: str | None, since: str | None, until: str | None, include_tools: bool, limit: int,
           team: bool, fmt: str | None) -> None:
    """Search prompts, answers and summaries (SQLite FTS5), best match first.

    Words are ANDed; use OR, NOT, "an exact phrase", prefix* and NEAR(a b). Quote
    anything with punctuation. Matches are stemmed: 'run' finds 'running'. Hits are
    ranked by bm25 among the 1,000 most recent matches.

    \b
    Examples:
      csm query search 'zeromq OR zmq' --since 30d
      csm query search '"database is locked"' --include-tools -p myrepo
      csm query search --team 'flaky test'
    """
    if team:
        from csm.client import team as team_mod

        return team_mod.search(text, project, since, until, limit, fmt)
    reply = request(protocol.Search(text=text, project=project, since=since, until=until,
                                    include_tools=include_tools, limit=limit))
    assert isinstance(reply, protocol.Rows)
    if fmt is not None:
        render.emit_rows(reply.columns, reply.rows, fmt)
        return
    color = render.color()
    if not reply.rows:
        click.echo("no matches" + ("" if include_tools else " (--include-tools also searches tool input and output)"),
                   err=True)
        return
    with render.paged():
        for sid, proj, ts, role, snippet, resume, cwd, score in reply.rows:
            if color:
                snippet = snippet.replace(MARKS[0], "\033[1;33m").replace(MARKS[1], "\033[0m")
            head = f"{timespec.local(ts)}  {role:<9}  {sid}  {proj}"
            click.echo(click.style(head, bold=True) if color else head)
            click.echo("    " + " ".join((snippet or "").split()))
            click.echo(f"    {resume}")
            click.echo()


@click.command("watch")
@session_argument(required=False)
@project_option
@render.output_options
def watch(session: str | None, project: str | None, fmt: str | None) -> None:
    """Print new messages as csmd ingests them: tail -f for all of Claude Code.

    SESSION (an id or unique prefix) follows one session and its subagents; --project
    follows a project; neither follows everything. Ctrl-C stops. --json and --jsonl print
    one JSON object a message (a stream has no end to close an array), --csv one row.

    \b
    Examples:
      csm watch
      csm watch 29ccd257
      csm watch -p myrepo --jsonl | jq -r .text
    """
    from csm.client import layouts
    from csm.client.export import target_arg

    color = render.color()
    missed = 0
    if fmt == "csv":
        render.emit_rows(ENTRY_COLUMNS, [], fmt)
    try:
        for msg in subscribe(protocol.Watch(session=target_arg(session) if session else None, project=project)):
            if isinstance(msg, protocol.Watching):
                click.echo(f"csm: watching {msg.what} (Ctrl-C to stop)", err=True)
            elif isinstance(msg, protocol.Messages):
                if fmt is None:
                    for e in msg.entries:
                        click.echo(layouts.entry_text(e, color, show_session=True))
                else:
                    render.emit_rows(ENTRY_COLUMNS, [list(render.plain(e).values()) for e in msg.entries],
                                     "jsonl" if fmt == "json" else fmt, header=False)
                sys.stdout.flush()
            elif isinstance(msg, protocol.Heartbeat) and msg.missed > missed:
                click.echo(f"csm: {msg.missed - missed} updates dropped: output was read too slowly", err=True)
                missed = msg.missed
            elif isinstance(msg, protocol.Ok):
                click.echo(f"csm: {msg.message}", err=True)
    except KeyboardInterrupt:
        sys.exit(130)

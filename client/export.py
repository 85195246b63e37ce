"""``csm export``: a session or a transcript file back out of the archive.

The archive outlives the transcripts (Claude Code deletes them after 30 days), so this is
also how a deleted transcript is brought back: ``--raw`` writes its lines byte for byte.
``markdown`` reads well on GitHub; ``html`` is one self-contained page (inline CSS, no
scripts, every transcript string escaped). Both include tool input and output.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

import click

from csm.client.transport import request
from csm.shared import protocol
from csm.shared.errors import DaemonError

FORMATS = ("jsonl", "markdown", "html")


def _target(target: str) -> str:
    """A path (an existing file, or a name ending in .jsonl: it may be deleted) is sent absolute;
    anything else is a session id or the start of one."""
    path = Path(target).expanduser()
    if target.endswith(".jsonl") or path.is_file():
        return str(path.absolute())
    return target


def receive(target: str, fmt: str, out: BinaryIO) -> protocol.ExportDone:
    """Write the chunks as they come, checking that none is missing."""
    expected = [0]

    def chunk(msg: protocol.Message) -> None:
        if not isinstance(msg, protocol.Chunk):
            return
        if msg.seq != expected[0]:
            raise DaemonError(f"export interrupted: piece {expected[0]} of the stream was lost; run it again")
        out.write(msg.data)
        expected[0] += 1

    done = request(protocol.Export(target=_target(target), format=fmt), timeout_s=30.0, on_progress=chunk)
    assert isinstance(done, protocol.ExportDone)
    if done.chunks != expected[0]:
        raise DaemonError(f"export incomplete: got {expected[0]} of {done.chunks} pieces; run it again")
    return done


def _render(target: str, fmt: str, out: BinaryIO) -> None:
    from csm.client import transcript

    reply = request(protocol.Show(session=target, full=True), timeout_s=60.0)
    assert isinstance(reply, protocol.Transcript)
    text = transcript.markdown(reply) if fmt == "markdown" else transcript.page(reply)
    out.write(text.encode("utf-8"))


@click.command()
@click.argument("target")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True,
              help="jsonl: the transcript's lines exactly as Claude Code wrote them; markdown; html (one page).")
@click.option("--raw", is_flag=True, help="The same as --format jsonl.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write to this file (replaced only once the export is complete) instead of stdout.")
def export(target: str, fmt: str, raw: bool, output: Path | None) -> None:
    """Write a session (TARGET: its id, or a unique start of it) or a transcript file (TARGET:
    its path) out of the archive, even after Claude Code deleted the file.

    With --raw (--format jsonl) the output is the file's complete lines byte for byte, as
    csm stored them: a last line still being written (no newline yet) is not included. A
    line csm could not store (see 'csm query errors') is missing from it. markdown and html
    take a session (id or prefix), with its subagents nested.

    \b
    Examples:
      csm export --raw 4e27c414 > session.jsonl
      csm export --raw ~/.claude/projects/-home-me-proj/4e27c414-a885-46a0-b5c8-d58e1417377d.jsonl -o copy.jsonl
      csm export 29ccd257 --format html -o session.html
      csm export 29ccd257 --format markdown > session.md
    """
    fmt = "jsonl" if raw else fmt

    def write(out: BinaryIO) -> protocol.ExportDone | None:
        if fmt == "jsonl":
            return receive(target, fmt, out)
        _render(target, fmt, out)
        return None

    if output is None or str(output) == "-":
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    output = output.expanduser()
    if not output.parent.absolute().is_dir():
        raise click.BadParameter(f"folder {output.parent} does not exist", param_hint="-o")
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent.absolute())
    try:
        with os.fdopen(fd, "wb") as out:
            done = write(out)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise
    what = f"{done.lines} lines ({done.bytes} bytes)" if done else fmt
    click.echo(f"wrote {what} to {output}", err=True)

"""``csm export``: a session or a transcript file back out of the archive.

The archive outlives the transcripts (Claude Code deletes them after 30 days), so this is
also how a deleted transcript is brought back: ``--raw`` writes its lines byte for byte.
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

FORMATS = ("jsonl",)


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


@click.command()
@click.argument("target")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True,
              help="jsonl: the transcript's lines exactly as Claude Code wrote them.")
@click.option("--raw", is_flag=True, help="The same as --format jsonl.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write to this file (replaced only once the export is complete) instead of stdout.")
def export(target: str, fmt: str, raw: bool, output: Path | None) -> None:
    """Write a session (TARGET: its id, or a unique start of it) or a transcript file (TARGET:
    its path) out of the archive, even after Claude Code deleted the file.

    With --raw (--format jsonl) the output is the file's complete lines byte for byte, as
    csm stored them: a last line still being written (no newline yet) is not included. A
    line csm could not store (see 'csm query errors') is missing from it.

    \b
    Examples:
      csm export --raw 4e27c414 > session.jsonl
      csm export --raw ~/.claude/projects/-home-me-proj/4e27c414-a885-46a0-b5c8-d58e1417377d.jsonl -o copy.jsonl
    """
    if raw:
        fmt = "jsonl"
    if output is None:
        receive(target, fmt, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    output = output.expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent.absolute())
    try:
        with os.fdopen(fd, "wb") as out:
            done = receive(target, fmt, out)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise
    click.echo(f"wrote {done.lines} lines ({done.bytes} bytes) to {output}", err=True)

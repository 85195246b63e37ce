"""``csm export``: one session written out for a person (markdown, html) or exactly as it was (jsonl).

markdown reads well on GitHub; html is the web Session page's rendering as one self-contained page
(inline CSS, no scripts, images as data, every transcript string escaped). Both include thinking,
tool input and output. jsonl (``--raw``)
is the transcript's lines byte for byte, streamed in checked chunks: the archive outlives
the transcripts (Claude Code deletes them after 30 days), so this is also how a deleted
transcript is brought back.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

import click

from csm.client import render
from csm.client.options import session_argument
from csm.client.redact import Redactor, summary
from csm.client.transport import conversation, request
from csm.shared import paths, protocol
from csm.shared.errors import DaemonError


@contextmanager
def _opened(path: str | None) -> Iterator[BinaryIO]:
    """stdout, or ``path`` written atomically: a reader never sees half a file, a failure leaves none."""
    if path in (None, "-"):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def target_arg(target: str) -> str:
    """A path (an existing file, or a name ending in .jsonl: it may be deleted) is sent absolute;
    anything else is a session id or the start of one."""
    path = Path(target).expanduser()
    if paths.is_transcript_name(target) or path.is_file():
        return str(path.absolute())
    return target


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


def receive(target: str, fmt: str, out: Writer, *, subagents: bool = False,
            on_file: Callable[[str], None] | None = None) -> protocol.ExportDone:
    """Write the chunks as they come, checking that none is missing (the transport acknowledges
    each one written: csmd sends only a few ahead, so a stopped client makes it wait). ``on_file`` is
    told each file's path before its chunks (``subagents``: the session's file, then its subagents')."""
    expected = [0]

    def chunk(msg: protocol.Message) -> None:
        if isinstance(msg, protocol.ExportFile):
            if on_file is not None:
                on_file(msg.path)
            return
        if not isinstance(msg, protocol.Chunk):
            return
        if msg.seq != expected[0]:
            raise DaemonError(f"export interrupted: piece {expected[0]} of the stream was lost; run it again")
        out.write(msg.data)  # written (a file, or stdout's whole writes) before the transport acknowledges it
        expected[0] += 1

    done = request(protocol.Export(target=target_arg(target), format=fmt, subagents=subagents), timeout_s=30.0,
                   on_progress=chunk)
    assert isinstance(done, protocol.ExportDone)
    if done.chunks != expected[0]:
        raise DaemonError(f"export incomplete: got {expected[0]} of {done.chunks} pieces; run it again")
    return done


class RedactedLines:
    """Raw lines redacted on their way to ``out``: chunks are cut anywhere, so a line is held until
    its newline (memory: the longest line, gathered without copying it again for each chunk);
    ``close`` writes a final line that has none."""

    def __init__(self, out: Writer, redactor: Redactor) -> None:
        self.out, self.redactor, self.tail = out, redactor, bytearray()

    def write(self, data: bytes) -> None:
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            self.tail += data[start:end]
            self.out.write(self.redactor.jsonl(bytes(self.tail)) + b"\n")
            self.tail.clear()
            start = end + 1
        self.tail += data[start:]

    def close(self) -> None:
        if self.tail:
            self.out.write(self.redactor.jsonl(bytes(self.tail)))
        self.tail.clear()


def written(t: protocol.Transcript, fmt: str) -> str:
    """The conversation as Markdown, or as the web Session page's HTML made one offline file."""
    if fmt == "markdown":
        from csm.client import layouts

        return layouts.markdown(t)
    from csm.web import conversation

    return conversation.page(t.session, t.entries)


@click.command("export")
@session_argument("target")
@click.option("--format", "fmt", type=click.Choice(["markdown", "html", "jsonl"]), default="markdown",
              show_default=True, help="markdown or html to read or share; jsonl: the lines exactly as written.")
@click.option("--raw", is_flag=True, help="The same as --format jsonl.")
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (replaced only once complete) instead of stdout.")
@render.terminal_options(wide=False, colors=False, paged=True)
@click.option("--redact", is_flag=True, help="Replace API keys, tokens, passwords, private keys and the home path "
              "(README lists the patterns); raw lines stay valid JSON.")
def export(target: str, fmt: str, raw: bool, output: str | None, redact: bool) -> None:
    """Export a session (an id or unique prefix) as Markdown, one HTML page, or its raw lines.

    With --raw (--format jsonl) TARGET may also be a transcript's path, and the output is
    the file's complete lines byte for byte, as csm stored them, even after Claude Code
    deleted the file: a last line still being written (no newline yet) is not included,
    nor is a line csm could not store (see 'csm query errors').

    \b
    Examples:
      csm export 29ccd257 --format html -o session.html
      csm export 29ccd257 > session.md
      csm export --raw 4e27c414 > session.jsonl
      csm export --raw ~/.claude/projects/-home-me-proj/4e27c414-a885-46a0-b5c8-d58e1417377d.jsonl -o copy.jsonl
      csm export 29ccd257 --redact --format html -o share.html
    """
    if raw:
        fmt = "jsonl"
    if output and output != "-" and not Path(output).expanduser().parent.is_dir():
        raise click.BadParameter(f"folder {Path(output).parent} does not exist", param_hint="-o")
    redactor = Redactor() if redact else None
    if fmt == "jsonl":
        with render.paged(output in (None, "-")), _opened(output) as out:
            if redactor is None:
                done = receive(target, fmt, out)
            else:
                lines = RedactedLines(out, redactor)
                done = receive(target, fmt, lines)
                lines.close()
        if output and output != "-":
            click.echo(f"wrote {done.lines} lines ({done.bytes} bytes) to {output}", err=True)
    else:
        reply = conversation(protocol.Show(session=target_arg(target), full=True), timeout_s=60.0)
        if redactor is not None:
            reply = redactor.struct(reply)
        with render.paged(output in (None, "-")), _opened(output) as out:
            out.write(written(reply, fmt).encode("utf-8"))
        if output and output != "-":
            click.echo(f"wrote {output}", err=True)
    if redactor is not None:
        click.echo(summary(redactor.counts), err=True)

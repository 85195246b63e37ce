"""``csm export``: one session written out as a file a person can read or share.

markdown reads well on GitHub; html is one self-contained page (inline CSS, no scripts,
every transcript string escaped). Both include tool input and output.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from csm.client.transport import request
from csm.shared import protocol


def _write(path: str | None, data: str) -> None:
    """To stdout, or to ``path`` atomically: a reader never sees half a file."""
    if path in (None, "-"):
        sys.stdout.write(data)
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


@click.command("export")
@click.argument("target")
@click.option("--format", "fmt", type=click.Choice(["markdown", "html"]), default="markdown", show_default=True,
              help="What to write.")
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of stdout.")
def export(target: str, fmt: str, output: str | None) -> None:
    """Export a session (an id or unique prefix) as Markdown or one HTML page.

    \b
    Examples:
      csm export 29ccd257 --format html -o session.html
      csm export 29ccd257 > session.md
    """
    from csm.client import transcript

    if output and output != "-" and not Path(output).parent.is_dir():
        raise click.BadParameter(f"folder {Path(output).parent} does not exist", param_hint="-o")
    reply = request(protocol.Show(session=target, full=True), timeout_s=60.0)
    assert isinstance(reply, protocol.Transcript)
    _write(output, transcript.markdown(reply) if fmt == "markdown" else transcript.page(reply))
    if output and output != "-":
        click.echo(f"wrote {output}", err=True)

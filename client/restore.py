"""``csm restore``: a session's transcript written back where Claude Code had it, so ``claude --resume``
works again after Claude Code's cleanup deleted it.

The bytes come from the raw export stream (``csm export --raw``: numbered chunks, one ``ExportFile``
before each file's), with the session's subagents. A file is never written in place: it goes to a
temporary file beside its destination (0600, like Claude Code's) and is linked to its name only
once complete, and the link fails rather than replace a file that appeared meanwhile. A file
already at the destination is compared, never overwritten: the same bytes are "already there",
other bytes are refused.

Restored to its own path, the file is the one csmd archived (its checkpoint, gone, is read again
and its lines re-attach: nothing is stored twice). Restored elsewhere (``--to``) under a watched
root, it is a copy, and csmd archives it as another file.
"""

from __future__ import annotations

import errno
import filecmp
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import click

from csm.client.export import receive
from csm.client.options import session_argument
from csm.client.render import emit_rows, output_options
from csm.shared.errors import Conflict, PathError

COLUMNS = ("status", "path", "lines", "bytes")
RESTORED, THERE, WOULD, DIFFERS = "restored", "already there", "would restore", "differs"


@dataclass
class File:
    """One file of the stream on its way to ``dest``: compared with what is there, else staged."""

    dest: Path
    dry_run: bool
    lines: int = 0
    size: int = 0
    status: str = ""
    existing: BinaryIO | None = None
    staged: BinaryIO | None = None
    tmp: str | None = None
    same: bool = True
    newline_last: bool = True

    def open(self) -> None:
        """Open what is at ``dest`` to compare, else stage a temporary file beside it (not in a dry run)."""
        try:
            self._open()
        except OSError as e:
            raise PathError(f"cannot write {self.dest}: {e.strerror}") from None

    def _open(self) -> None:
        try:
            fd = os.open(self.dest, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            if not self.dry_run:
                self.dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd, self.tmp = tempfile.mkstemp(dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".restore")
                self.staged = os.fdopen(fd, "wb")
            return
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            self.same = False  # a symbolic link there: not the file, and never followed
            return
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            self.same = False  # a folder, a pipe: not the file
            return
        self.existing = os.fdopen(fd, "rb")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self.lines += data.count(b"\n")
        self.newline_last = data.endswith(b"\n")
        if self.existing is not None:
            self.same = self.same and self.existing.read(len(data)) == data
        elif self.staged is not None:
            self.staged.write(data)

    def finish(self) -> str:
        if self.size and not self.newline_last:
            self.lines += 1  # a final line stored without its newline
        if self.existing is not None:
            same = self.same and self.existing.read(1) == b""
            self.existing.close()
            return THERE if same else DIFFERS
        if not self.same:
            return DIFFERS
        if self.staged is None:
            return WOULD
        try:
            self.staged.flush()
            os.fsync(self.staged.fileno())
            self.staged.close()
            assert self.tmp is not None
            try:
                os.link(self.tmp, self.dest)  # never replaces: a file that appeared meanwhile stays
            except FileExistsError:
                return THERE if filecmp.cmp(self.tmp, self.dest, shallow=False) else DIFFERS
            return RESTORED
        finally:
            self.discard()

    def discard(self) -> None:
        for f in (self.existing, self.staged):
            if f is not None and not f.closed:
                f.close()
        if self.tmp is not None:
            os.unlink(self.tmp)
            self.tmp = None


@dataclass
class Restore:
    """The stream's files, each to its destination: its own path, or under ``to`` as it lay beside
    the session's file (``<session>/subagents/agent-….jsonl``)."""

    to: Path | None
    dry_run: bool
    files: list[File] = field(default_factory=list)
    origin: Path | None = None
    """The folder of the session's own file, which its subagents' paths are taken relative to."""

    def start(self, path: str) -> None:
        if self.files:
            self.files[-1].status = self.files[-1].finish()
        self.files.append(File(self.destination(Path(path)), self.dry_run))
        self.files[-1].open()

    def destination(self, path: Path) -> Path:
        if self.origin is None:
            self.origin = path.parent
        if self.to is None:
            return path
        rel = os.path.relpath(path, self.origin)
        return self.to / (path.name if rel.startswith("..") else rel)

    def write(self, data: bytes) -> None:
        self.files[-1].write(data)

    def end(self) -> None:
        if self.files and not self.files[-1].status:
            self.files[-1].status = self.files[-1].finish()

    def abort(self) -> None:
        for f in self.files:
            f.discard()


@click.command("restore")
@session_argument()
@click.option("--to", "to", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Write into DIR instead of where Claude Code had the files (a copy: under a watched "
                   "folder csmd archives it as another file).")
@click.option("--dry-run", is_flag=True, help="Say what would be written; write nothing.")
@output_options
def restore(session: str, to: Path | None, dry_run: bool, fmt: str | None) -> None:
    """Write a session's transcript, and its subagents', back where Claude Code had them, byte for
    byte as csm archived them, so 'claude --resume' finds it again after Claude Code deleted it.

    SESSION is a session id, a unique prefix of one, or the transcript's path. A file already
    there with the same bytes is left as it is ("already there"); one with other bytes is never
    overwritten: csm says so and exits with code 73 (restore it elsewhere with --to).

    \b
    Examples:
      csm restore 4e27c414 --dry-run
      csm restore 4e27c414
      csm restore 4e27c414 --to /tmp/rescued --json
    """
    to = to.expanduser().absolute() if to else None
    job = Restore(to, dry_run)
    try:
        receive(session, "jsonl", job, subagents=True, on_file=job.start)
        job.end()
    except BaseException:
        job.abort()
        raise
    emit_rows(COLUMNS, [[f.status, str(f.dest), f.lines, f.size] for f in job.files], fmt)
    refused = [f for f in job.files if f.status == DIFFERS]
    if refused:
        raise Conflict(f"{len(refused)} of {len(job.files)} files differ from what csm archived and were left alone: "
                       f"{', '.join(str(f.dest) for f in refused)}; restore elsewhere with --to DIR")

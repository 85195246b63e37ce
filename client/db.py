"""``csm db``: the database file itself, checked and copied without csmd.

These commands open the file directly (read-only) instead of asking csmd, because
they are what a user reaches for when csmd refuses to start on a damaged database,
and because a backup read by the client costs csmd neither memory nor its writer.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from csm.client import render
from csm.shared import config as config_mod
from csm.shared import protocol
from csm.shared.errors import Conflict, DaemonNotRunning, DatabaseError, PathError


WAY_OUT = ("restore it from a backup, or move it away and start csmd to rebuild it from the transcripts that "
           "still exist (lines of transcripts deleted since cannot come back)")


def _configured(config_file: Path | None) -> Path:
    return config_mod.resolve(config_file).db()


@click.group()
def db() -> None:
    """The archive's database file: where it is, whether it is sound."""


def _current(config_file: Path | None, timeout_s: float = 2.0) -> Path:
    """The running csmd's database, else the configured one."""
    from csm.client.transport import request

    try:
        reply = request(protocol.Status(), timeout_s=timeout_s)
        assert isinstance(reply, protocol.StatusReply)
        return Path(reply.db_path)
    except DaemonNotRunning:
        return _configured(config_file)


@db.command("path")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file csmd reads (default: the user config dir's csm/config.toml).")
def db_path(config_file: Path | None) -> None:
    """Print the database file: the running csmd's, else the configured one.

    \b
    Example:
      sqlite3 "$(csm db path)" "SELECT count(*) FROM lines"
    """
    click.echo(_current(config_file))


@db.command("check")
@click.option("--db", "db_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Database file (default: the configured one, as 'csm db path' prints it).")
@click.option("--full", is_flag=True, help="Run integrity_check (slower: also checks indexes against tables).")
@render.output_options
def db_check(db_file: Path | None, full: bool, fmt: str | None) -> None:
    """Check the database file for damage (works while csmd is stopped or running).

    Runs SQLite's quick_check (or integrity_check with --full) on a read-only
    connection. Exits 1 and lists the problems when the file is damaged; then restore
    it from a backup, or move it away and start csmd to rebuild it from the
    transcripts that still exist (lines of transcripts deleted since cannot come back).

    \b
    Examples:
      csm db check
      csm db check --full --db ~/backup/csm.db
    """
    import sqlite3

    path = (db_file or _configured(None)).absolute()
    if not path.is_file():
        raise PathError(f"no database file at {path}")
    pragma = "integrity_check" if full else "quick_check"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problems = [r[0] for r in conn.execute(f"PRAGMA {pragma}")]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise DatabaseError(f"{path}: {e}; {WAY_OUT}") from None
    ok = problems == ["ok"]
    if fmt is not None:
        render.emit_record({"path": str(path), "check": pragma, "ok": ok, "schema_version": version,
                            "problems": [] if ok else problems}, fmt)
    elif ok:
        click.echo(f"{path}: ok ({pragma}, schema version {version})")
    else:
        for p in problems:
            click.echo(p)
    if not ok:
        raise DatabaseError(f"{path} is damaged ({len(problems)} problems found by {pragma}); {WAY_OUT}")


@db.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--db", "db_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Database file to copy (default: the running csmd's, else the configured one).")
@render.output_options
def db_backup(dest: Path, db_file: Path | None, fmt: str | None) -> None:
    """Write a consistent copy of the database to DEST, while csmd runs or not.

    SQLite's online backup, read in one read transaction: the copy is the archive as of one
    commit, every file's rows and checkpoint together, and csmd goes on writing meanwhile. The
    copy is a single file (no WAL beside it), readable only by you, checked (quick_check) and
    put in place only when complete; DEST is never overwritten. To restore, see README
    ("Backup and restore").

    \b
    Example:
      csm db backup ~/backup/csm-$(date +%F).db
    """
    import sqlite3
    import time

    src = (db_file or _current(None, timeout_s=10.0)).absolute()  # a busy csmd's own file, not a guess
    if not src.is_file():
        raise PathError(f"no database file at {src}")
    dest = dest.absolute()
    if dest.exists() or dest.is_symlink():
        raise Conflict(f"{dest} exists; csm db backup never writes over a file: choose another name")
    if not dest.parent.is_dir():
        raise PathError(f"no folder {dest.parent} to write the backup in")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    started = time.monotonic()
    umask = os.umask(0o077)
    try:
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        target = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(target)  # all pages in one step: one snapshot, however long it takes
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            problems = [r[0] for r in target.execute("PRAGMA quick_check")]
        finally:
            target.close()
            source.close()
        if problems != ["ok"]:
            raise DatabaseError(f"the copy of {src} does not check ({problems[0]}); {WAY_OUT}")
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(partial, dest)  # fails rather than replace a file made at DEST meanwhile
    except FileExistsError:
        raise Conflict(f"{dest} appeared while the backup was written; it is left as it was") from None
    except sqlite3.Error as e:
        raise DatabaseError(f"cannot back up {src} to {dest}: {e}") from None
    except OSError as e:
        raise PathError(f"cannot write the backup {dest}: {e.strerror}") from None
    finally:
        os.umask(umask)
        partial.unlink(missing_ok=True)
    size, seconds = dest.stat().st_size, round(time.monotonic() - started, 3)
    if fmt is not None:
        render.emit_record({"source": str(src), "backup": str(dest), "bytes": size, "seconds": seconds}, fmt)
    else:
        click.echo(f"{dest}: {size / 2**20:.1f} MB, a consistent copy of {src} ({seconds:.1f} s)")

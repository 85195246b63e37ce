"""``csm db``: the database file itself, checked without csmd.

These commands open the file directly (read-only) instead of asking csmd, because
they are what a user reaches for when csmd refuses to start on a damaged database.
"""

from __future__ import annotations

from pathlib import Path

import click

from csm.client import render
from csm.shared import config as config_mod
from csm.shared import protocol
from csm.shared.errors import DaemonNotRunning, DatabaseError, PathError


WAY_OUT = ("restore it from a backup, or move it away and start csmd to rebuild it from the transcripts that "
           "still exist (lines of transcripts deleted since cannot come back)")


def _configured(config_file: Path | None) -> Path:
    return config_mod.resolve(config_file).db()


@click.group()
def db() -> None:
    """The archive's database file: where it is, whether it is sound."""


@db.command("path")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file csmd reads (default: the user config dir's csm/config.toml).")
def db_path(config_file: Path | None) -> None:
    """Print the database file: the running csmd's, else the configured one.

    \b
    Example:
      sqlite3 "$(csm db path)" "SELECT count(*) FROM lines"
    """
    from csm.client.transport import request

    try:
        reply = request(protocol.Status(), timeout_s=2.0)
        assert isinstance(reply, protocol.StatusReply)
        click.echo(reply.db_path)
    except DaemonNotRunning:
        click.echo(_configured(config_file))


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

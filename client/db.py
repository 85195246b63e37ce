"""``csm db``: the database file itself, checked and copied without csmd.

These commands open the file directly (read-only) instead of asking csmd, because
they are what a user reaches for when csmd refuses to start on a damaged database,
and because a backup read by the client costs csmd neither memory nor its writer.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from csm.client import render
from csm.shared import config as config_mod
from csm.shared import paths, protocol
from csm.shared.errors import Conflict, DaemonNotRunning, DatabaseError, PathError

if TYPE_CHECKING:
    import sqlite3


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
            names = _archives(conn)
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise DatabaseError(f"{path}: {e}; {WAY_OUT}") from None
    ok = problems == ["ok"]
    archives = [_check_archive(paths.archive_path(path, n), pragma) for n in names]
    if fmt is not None:
        render.emit_record({"path": str(path), "check": pragma, "ok": ok, "schema_version": version,
                            "problems": [] if ok else problems, "archives": archives}, fmt)
    else:
        click.echo(f"{path}: ok ({pragma}, schema version {version})" if ok else "\n".join(problems))
        for a in archives:
            click.echo(f"{a['path']}: ok ({pragma})" if a["ok"] else f"{a['path']}: {'; '.join(a['problems'])}")
    if not ok:
        raise DatabaseError(f"{path} is damaged ({len(problems)} problems found by {pragma}); {WAY_OUT}")
    if bad := [a["path"] for a in archives if not a["ok"]]:
        raise DatabaseError(f"archive {', '.join(bad)} cannot be read: the sessions in it are missing from every "
                            "query; put it back from a backup ('csm db backup' copies archives too)")


def _archives(conn: sqlite3.Connection) -> list[str]:
    """The archive names a database lists (none before ``csm archive`` existed)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'archives'").fetchone():
        return []
    return [r[0] for r in conn.execute("SELECT name FROM archives ORDER BY name")]


def _check_archive(path: Path, pragma: str) -> dict[str, object]:
    """quick_check (or integrity_check) of one archive file, read-only; its problems name it."""
    import sqlite3

    if not path.is_file():
        return {"path": str(path), "ok": False, "problems": ["missing"]}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problems = [r[0] for r in conn.execute(f"PRAGMA {pragma}")]
        finally:
            conn.close()
    except sqlite3.Error as e:
        problems = [str(e)]
    ok = problems == ["ok"]
    return {"path": str(path), "ok": ok, "problems": [] if ok else problems}


def _copy_options(fn: Callable[..., None]) -> Callable[..., None]:
    """DEST, --db and the output options of the commands that write a copy of the database."""
    fn = render.output_options(fn)
    fn = click.option("--db", "db_file", type=click.Path(dir_okay=False, path_type=Path),
                      help="Database file to copy (default: the running csmd's, else the configured one).")(fn)
    return click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))(fn)


@db.command("backup")
@_copy_options
def db_backup(dest: Path, db_file: Path | None, fmt: str | None) -> None:
    """Write a consistent copy of the database to DEST, and of its archives beside it, while csmd runs or not.

    SQLite's online backup, read in one read transaction: the copy is the archive as of one
    commit, every file's rows and checkpoint together, and csmd goes on writing meanwhile. The
    copy is a single file (no WAL beside it), readable only by you, checked (quick_check) and
    put in place only when complete; DEST is never overwritten. Archive files (csm archive)
    are copied after it, named by the same rule (DEST's name-archive-2025.db). To restore,
    see README ("Backup and restore").

    \b
    Example:
      csm db backup ~/backup/csm-$(date +%F).db
    """
    import time

    src = (db_file or _current(None, timeout_s=10.0)).absolute()  # a busy csmd's own file, not a guess
    dest = dest.absolute()
    started = time.monotonic()
    names = _write_copy(src, dest, "back up")
    for n in names:  # after the main file: a line moved meanwhile is in both copies, never in neither
        _write_copy(paths.archive_path(src, n), paths.archive_path(dest, n), "back up")
    copies = [dest, *(paths.archive_path(dest, n) for n in names)]
    record = {"source": str(src), "backup": str(dest), "bytes": sum(p.stat().st_size for p in copies),
              "archives": [str(p) for p in copies[1:]], "seconds": round(time.monotonic() - started, 3)}
    if fmt is not None:
        render.emit_record(record, fmt)
    else:
        more = f" and its {len(names)} archives" if names else ""
        click.echo(f"{dest}: {record['bytes'] / 2**20:.1f} MB, a consistent copy of {src}{more} "
                   f"({record['seconds']:.1f} s)")


@db.command("decompress")
@_copy_options
def db_decompress(dest: Path, db_file: Path | None, fmt: str | None) -> None:
    """Write a plain copy of the database to DEST: every line as text, archives included.

    For tools that know nothing of csm (sqlite3, datasette): in DEST every row of events (and
    of the lines view) has its text in raw, compressed lines and archived sessions included;
    zraw is empty. A consistent copy taken while csmd runs, checked, never over a file.

    \b
    Examples:
      csm db decompress /tmp/csm-plain.db
      datasette /tmp/csm-plain.db
    """
    import time

    src = (db_file or _current(None, timeout_s=10.0)).absolute()
    dest = dest.absolute()
    started = time.monotonic()
    _write_copy(src, dest, "decompress", lambda target: _plain(target, src))
    record = {"source": str(src), "copy": str(dest), "bytes": dest.stat().st_size,
              "seconds": round(time.monotonic() - started, 3)}
    if fmt is not None:
        render.emit_record(record, fmt)
    else:
        click.echo(f"{dest}: {record['bytes'] / 2**20:.1f} MB, every line of {src} as plain text "
                   f"({record['seconds']:.1f} s)")


def _plain(target: sqlite3.Connection, src: Path) -> None:
    """Bring the archived lines into the copy and decompress every line (README's recipe, in SQL)."""
    import zstandard

    for n in _archives(target):
        path = paths.archive_path(src, n)
        if not path.is_file():
            raise DatabaseError(f"archive {path} is missing: its sessions' lines cannot be copied; put it back "
                                "from a backup first ('csm db check' checks every archive)")
        target.execute("ATTACH ? AS arc", (f"file:{path}?mode=ro",))
        try:  # a line being moved as the copy was taken is in both: the main file's copy counts
            columns = ", ".join(r[1] for r in target.execute("PRAGMA arc.table_info(events)"))
            target.execute(f"INSERT INTO events ({columns}) SELECT {columns} FROM arc.events a "
                           "WHERE NOT EXISTS (SELECT 1 FROM main.events e WHERE e.id = a.id)")
        finally:
            target.execute("DETACH arc")
    dicts = {i: zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(d))
             for i, d in target.execute("SELECT id, dict FROM raw_dictionaries")}
    dicts[None] = zstandard.ZstdDecompressor()
    target.create_function("csm_unzip", 2, lambda zraw, dict_id: dicts[dict_id].decompress(zraw))
    target.execute("UPDATE events SET raw = CAST(csm_unzip(zraw, dict_id) AS TEXT), zraw = NULL, dict_id = NULL "
                   "WHERE zraw IS NOT NULL")
    if _archives(target):
        target.execute("DELETE FROM archived_files")
        target.execute("DELETE FROM archive_journal")
        target.execute("DELETE FROM archives")
    target.execute("VACUUM")


def _write_copy(src: Path, dest: Path, what: str,
                change: Callable[[sqlite3.Connection], None] | None = None) -> list[str]:
    """Copy database ``src`` to ``dest`` (online backup, one snapshot), ``change`` it, check it, and put it in
    place only when complete, never over a file; the archives the copy lists."""
    import sqlite3

    if not src.is_file():
        raise PathError(f"no database file at {src}")
    if dest.exists() or dest.is_symlink():
        raise Conflict(f"{dest} exists; csm db {what} never writes over a file: choose another name")
    if not dest.parent.is_dir():
        raise PathError(f"no folder {dest.parent} to write to")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    umask = os.umask(0o077)
    try:
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        target = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(target)  # all pages in one step: one snapshot, however long it takes
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            if change is not None:
                change(target)
            problems = [r[0] for r in target.execute("PRAGMA quick_check")]
            names = _archives(target)
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
        raise Conflict(f"{dest} appeared while it was written; it is left as it was") from None
    except sqlite3.Error as e:
        raise DatabaseError(f"cannot {what} {src} to {dest}: {e}") from None
    except OSError as e:
        raise PathError(f"cannot write {dest}: {e.strerror}") from None
    finally:
        os.umask(umask)
        partial.unlink(missing_ok=True)
    return names

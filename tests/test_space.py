"""Disk space comes back: the WAL after a burst of work, free pages after deletions (issue 14)."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

from csmtest import WITHOUT_ARCHIVES, WITHOUT_COMPRESSED_LINES, Csmd, db_rows, scalar, wait_for

from csm.daemon.checkpoint import RESTART_BYTES
from csm.daemon.migrations import MIGRATIONS


def _line(i: int, size: int = 200) -> bytes:
    obj = {"type": "user", "uuid": f"u{i}", "sessionId": "s1", "timestamp": "2026-01-01T00:00:00Z",
           "message": {"role": "user", "content": "x" * size}}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _wal(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_wal_is_truncated_once_idle_after_a_burst(csmd: Csmd, projects: Path, db: Path) -> None:
    """A burst of 2 MB of lines (under the old 4 MB poke) grows the WAL; once csmd is idle the WAL goes back
    to nothing, instead of staying at its high-water mark for ever."""
    csmd.start()
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(_line(i, 2000) for i in range(1000)))
    wait_for(lambda: scalar("SELECT count(*) FROM events") == 1000, 20, "the burst to be stored")
    wait_for(lambda: _wal(db) == 0, 15, "the WAL to be truncated once idle")
    assert db_rows(db, "SELECT count(*) FROM events") == [(1000,)], "the rows reached the database file"


def test_many_tiny_commits_keep_the_wal_small(csmd: Csmd, projects: Path, db: Path) -> None:
    """Each tiny commit rewrites a dozen pages: counting line bytes, the checkpoint came ~200x too late and the
    WAL grew to tens of MB over a few hundred appends. Counted in pages, it stays near the 16 MB rewind point (8-10 MB measured; 76 MB before)."""
    csmd.start()
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"")
    biggest = 0
    with open(f, "ab") as out:
        for i in range(300):
            out.write(_line(i, 50))
            out.flush()
            wait_for(lambda i=i: scalar("SELECT count(*) FROM events") == i + 1, 20, f"line {i}")
            biggest = max(biggest, _wal(db))
    # RESTART_BYTES (16 MB) is where the checkpointer rewinds the WAL; a RESTART that readers hold off
    # gives up after 100 ms and is tried at the next poke, so the WAL may overshoot it by what those
    # commits add (18 and 27 MB seen under load), never grow with the appends as before (76 MB).
    assert biggest <= 2 * RESTART_BYTES, f"the WAL grew to {biggest >> 20} MB during 300 tiny appends"


def _as_older_csm_left_it(db: Path) -> None:
    """Make the database what a csm before migration 8 (incremental vacuum) wrote: no auto_vacuum, no
    compressed-lines columns (migration 9) nor archives (10), its version the one before."""
    number = [name for name, _ in MIGRATIONS].index("incremental_vacuum")
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.executescript(
            f"BEGIN; {WITHOUT_ARCHIVES} {WITHOUT_COMPRESSED_LINES} PRAGMA user_version = {number}; COMMIT;")
        conn.execute("PRAGMA auto_vacuum = NONE")
        conn.execute("VACUUM")
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    finally:
        conn.close()


def _free_pages(db: Path, mb: int) -> None:
    """Leave ``mb`` MB of free pages in the file, as deleted rows do (a table filled, then dropped)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("CREATE TABLE junk (b BLOB)")
        conn.executemany("INSERT INTO junk VALUES (randomblob(100000))", [()] * (mb * 10))
        conn.execute("DROP TABLE junk")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _pragma(db: Path, name: str) -> int:
    return db_rows(db, f"PRAGMA {name}")[0][0]


def test_free_pages_come_back_after_the_migration(csmd: Csmd, projects: Path, db: Path, tmp_path: Path) -> None:
    """An existing database is rewritten once (the log says so and how long), and from then on free pages are
    returned to the file system while csmd idles: the file shrinks, the rows stay."""
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(_line(i, 2000) for i in range(500)))
    csmd.start()
    wait_for(lambda: scalar("SELECT count(*) FROM events") == 500, 20, "the lines to be stored")
    csmd.stop()
    _as_older_csm_left_it(db)
    _free_pages(db, 8)
    assert _pragma(db, "freelist_count") * 16384 >= 7 << 20

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as supervisor:  # as systemd's NOTIFY_SOCKET
        supervisor.bind(str(tmp_path / "notify"))
        supervisor.settimeout(20)
        csmd.env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
        csmd.start()
        first = supervisor.recv(4096).decode()
        del csmd.env["NOTIFY_SOCKET"]  # the next starts are not supervised
    assert "migration incremental_vacuum: rewriting database" in csmd.log()
    assert first.startswith("EXTEND_TIMEOUT_USEC="), "systemd's start timeout is extended before the rewrite"
    assert int(first.split("\n")[0].split("=")[1]) >= 60_000_000
    assert _pragma(db, "auto_vacuum") == 2, "the database was converted to incremental vacuum"
    assert db_rows(db, "PRAGMA user_version") == [(len(MIGRATIONS),)], "both later migrations recorded"
    assert db_rows(db, "SELECT count(*) FROM raw_dictionaries") == [(0,)]
    csmd.stop()

    _free_pages(db, 8)  # now kept as free pages in the file, until csmd gives them back
    before = db.stat().st_size
    assert _pragma(db, "freelist_count") * 16384 >= 7 << 20
    csmd.start()
    wait_for(lambda: _pragma(db, "freelist_count") < 64, 20, "the free pages to be given back")
    wait_for(lambda: db.stat().st_size <= before - (6 << 20), 20, "the file to shrink")
    assert db_rows(db, "SELECT count(*) FROM events") == [(500,)]
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_each_step_gives_back_a_whole_step_of_pages(tmp_path: Path) -> None:
    """``incremental_vacuum`` moves one page per step of its statement, and Python's sqlite3 steps it once (it
    declares no columns): each transaction gave back one page, not ``STEP_PAGES`` (8 MB took 512 of them)."""
    from csm.daemon import space
    from csm.daemon.store import Store, open_writer

    store = Store(open_writer(tmp_path / "csm.db"))
    try:
        store.conn.execute("CREATE TABLE filler (x BLOB)")
        store.conn.executemany("INSERT INTO filler VALUES (randomblob(16000))", [()] * 300)
        store.conn.execute("DELETE FROM filler")
        free = store.conn.execute("PRAGMA freelist_count").fetchone()[0]
        assert free >= 2 * space.STEP_PAGES
        steps: list[int] = []
        assert space.give_back(store, lambda: len(steps) >= 1, steps.append) == space.STEP_PAGES
        assert store.conn.execute("PRAGMA freelist_count").fetchone()[0] == free - space.STEP_PAGES
        assert space.give_back(store, lambda: False, steps.append) == free - space.STEP_PAGES
        assert store.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    finally:
        store.close()

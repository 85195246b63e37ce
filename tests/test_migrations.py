"""Migrations are numbered 1, 2, … without gaps and the schema version is recorded once
(``PRAGMA user_version``); a database of any earlier csm, which recorded the names of its migrations,
migrates to the same schema as a new one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from csm.daemon.migrations import EARLIER_NAMES, MIGRATIONS
from csm.daemon.store import open_writer
from csm.shared.errors import DatabaseError

EARLIER = {number: name for name, number in EARLIER_NAMES.items()}

# What earlier csm versions left: the migrations each had applied, in the order it applied them. The
# fifth is a database of a csm built while migrations 4 and 5 landed (5 came first).
STATES = [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]]


def schema(db: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute("SELECT type, name, COALESCE(sql, '') FROM sqlite_master"))
    finally:
        conn.close()


def version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def earlier_database(db: Path, applied: list[int]) -> None:
    """A database as an earlier csm wrote it: each migration with its name recorded, user_version its place."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE _csm_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for place, number in enumerate(applied, 1):
        conn.executescript(f"BEGIN; {MIGRATIONS[number - 1][1]}; INSERT INTO _csm_migrations VALUES "
                           f"('{EARLIER[number]}', 'then'); PRAGMA user_version = {place}; COMMIT;")
    conn.execute("INSERT INTO events (id, file_id, generation, line_offset, raw) VALUES (1, 1, 0, 0, '{}')")
    conn.close()


def test_migrations_are_numbered_without_gaps_and_each_earlier_name_has_its_number() -> None:
    # Names were recorded up to migration 7; later migrations are known by user_version alone.
    assert sorted(EARLIER_NAMES.values()) == list(range(1, 8))
    assert len(MIGRATIONS) >= 7
    assert len({name for name, _ in MIGRATIONS}) == len(MIGRATIONS)


@pytest.mark.parametrize("applied", STATES, ids=lambda a: "+".join(map(str, a)))
def test_a_database_of_an_earlier_csm_migrates_to_the_new_schema(tmp_path: Path, applied: list[int]) -> None:
    fresh = tmp_path / "fresh.db"
    open_writer(fresh).close()
    old = tmp_path / "old.db"
    earlier_database(old, applied)
    open_writer(old).close()
    assert version(old) == version(fresh) == len(MIGRATIONS)
    assert schema(old) == schema(fresh), "the same tables, indexes, views and triggers as a new database"
    assert not any(name == "_csm_migrations" for _, name, _ in schema(old)), "the version is recorded once"
    conn = sqlite3.connect(old)
    assert conn.execute("SELECT raw FROM events").fetchall() == [("{}",)], "rows kept"
    conn.close()
    open_writer(old).close()  # and opening it again changes nothing
    assert schema(old) == schema(fresh)


def test_a_database_recording_a_migration_this_csm_does_not_know_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    earlier_database(old, [1, 2])
    conn = sqlite3.connect(old)
    conn.execute("INSERT INTO _csm_migrations VALUES ('m999_from_the_future', 'then')")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseError, match="newer csm.*m999_from_the_future"):
        open_writer(old)
    assert "_csm_migrations" in {name for _, name, _ in schema(old)}, "left as it was"

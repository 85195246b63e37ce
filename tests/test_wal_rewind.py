"""The WAL is rewound without holding the writer while csmd's queries end (issue 10 item 15).

A RESTART checkpoint takes SQLite's write lock and then waits for every reader on an older
snapshot; with clients querying all the time, that wait held the ingest thread back at every rewind
and was freshness's p99 under load. The checkpoint thread now holds new queries back and waits for the
running ones first (``Turns.between_reads``), and rewinds only once none is left. Real SQLite files,
real threads: a query holding its snapshot, the checkpointer rewinding, and a writer that must get the
write lock at once meanwhile.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from csm.daemon.checkpoint import Checkpointer
from csm.daemon.store import open_reader, open_writer
from csm.daemon.turns import HOLD_S, Turns
from csmtest import wait_for


@pytest.fixture
def wal(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    db = tmp_path / "csm.db"
    writer = open_writer(db)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (x BLOB)")
    yield db, writer
    writer.close()


def grow(writer: sqlite3.Connection, commits: int) -> None:
    for _ in range(commits):
        writer.execute("INSERT INTO t VALUES (randomblob(60000))")


class Query(threading.Thread):
    """A query of csmd's (``turns.reading``) that holds its snapshot until ``end`` is set."""

    def __init__(self, db: Path, turns: Turns) -> None:
        super().__init__(daemon=True)
        self.db, self.turns = db, turns
        self.in_query, self.end = threading.Event(), threading.Event()

    def run(self) -> None:
        reader = open_reader(self.db)
        with self.turns.reading():
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM t").fetchone()  # a snapshot on the WAL as it is now
            self.in_query.set()
            self.end.wait(30)
            reader.execute("COMMIT")
        reader.close()

    def running(self) -> Query:
        self.start()
        assert self.in_query.wait(10)
        return self


def wal_frames(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        conn.close()


def test_a_rewind_waits_for_running_queries_without_the_write_lock_then_rewinds(wal: tuple[Path, sqlite3.Connection]) -> None:
    db, writer = wal
    turns = Turns()
    ck = Checkpointer(db, writer, turns)
    ck.readers_wait_s = 30.0  # the query below ends when the test says so
    ck.restart_frames = ck.queried_restart_frames = 8
    grow(writer, 20)

    query = Query(db, turns).running()
    grow(writer, 20)  # frames the query's snapshot does not see, so it pins the WAL
    rewinding = threading.Thread(target=ck.checkpoint, daemon=True)
    rewinding.start()
    wait_for(lambda: turns.held, 10, "the checkpointer to wait for the running query")

    # Meanwhile the writer is never made to wait: the write lock is free (no busy wait allowed here).
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    other.execute("COMMIT")
    other.close()

    # A new query is held back while the rewind waits (it would pin the WAL again).
    entered = threading.Event()

    def late_query() -> None:
        with turns.reading():
            entered.set()

    threading.Thread(target=late_query, daemon=True).start()
    assert not entered.wait(HOLD_S / 2), "a query started while the WAL was being rewound"
    assert rewinding.is_alive()

    query.end.set()
    rewinding.join(30)
    query.join(10)
    assert not rewinding.is_alive() and not query.is_alive()
    assert entered.wait(10), "the held query went on once the rewind was done"
    assert not turns.held
    before = wal_frames(db)
    grow(writer, 1)
    assert wal_frames(db) < before, "the next commit did not start the WAL from its beginning"
    ck.stop()


def test_a_rewind_gives_up_on_a_query_that_runs_on(wal: tuple[Path, sqlite3.Connection]) -> None:
    """A query longer than the wait (an export held by a slow client): no rewind, queries go on."""
    db, writer = wal
    turns = Turns()
    ck = Checkpointer(db, writer, turns)
    ck.readers_wait_s = 0.2
    ck.restart_frames = ck.queried_restart_frames = 8
    grow(writer, 20)
    query = Query(db, turns).running()
    grow(writer, 20)
    ck.checkpoint()  # returns after the wait, without rewinding
    assert not turns.held
    with turns.reading():
        pass  # not held back any more
    frames = wal_frames(db)
    grow(writer, 1)
    assert wal_frames(db) > frames, "the WAL was rewound under a running query's snapshot"
    query.end.set()
    query.join(10)
    ck.stop()

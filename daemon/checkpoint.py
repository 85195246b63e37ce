"""WAL checkpoints on their own thread, so the ingest thread never waits for an fsync.

Why: SQLite's automatic checkpoint runs inside the writer's ``COMMIT`` once the WAL holds
1,000 pages, and each one copies those pages into the database file and fsyncs it. On a
100 MB backlog that is about 30 checkpoints and, on this machine's disk, half the wall
time of the initial sync (4.1 s with them, 1.7 s without; the CPU time is the same).

Here the writer's automatic checkpoint is switched off and this thread does the work on a
connection of its own: after about ``EVERY_FRAMES`` pages written to the WAL the ingest
thread pokes it (``committed``: it is an ingest sink) and it runs a PASSIVE
checkpoint, which never blocks the writer or readers. sqlite3 releases the GIL while it
copies and syncs, so the checkpoint overlaps with parsing on the second core. The WAL's
growth is counted after each commit, in pages (SQLite's own count: ``heap.pages_written``), not
from line bytes: a commit of one tiny line still rewrites about 16 pages (b-tree edges,
indexes, the search index, the session figures), so counting bytes poked ~200x too late and
300 tiny appends grew the WAL to 76 MB; and a commit of a round of 50 files' lines writes
about 150, so a fixed estimate per commit poked ~7x too late again (WAL peaks of 80-230 MB
under ``bench/soak.py``). Where the count cannot be read, ``PAGES_PER_COMMIT`` plus the lines'
own pages is the estimate.

A passive checkpoint cannot rewind the WAL while the writer keeps appending, so during a
long backlog the WAL would grow to the size of the backlog; and even a complete one rarely
lets the writer start the WAL again, because a reader that began before it ended still holds
its snapshot when the next commit begins (300 tiny appends under polling queries: 24 MB of
WAL). So once it holds more than ``RESTART_BYTES``, or the passive one copied everything, a
RESTART checkpoint follows the passive one: it waits for the
writer's current transaction, copies the few frames the passive one missed, and lets the
next transaction start the WAL from the beginning (``journal_size_limit`` then trims the
file down to ``store.JOURNAL_LIMIT_BYTES``). Once a burst is over (no commit for ``IDLE_S``) a
TRUNCATE checkpoint empties the WAL file, so an idle csm takes no more disk than its
database. A RESTART holds the write lock until no reader is on an older snapshot, so while
appends arrive csmd's own queries are drained first (``Turns.between_reads``: new ones wait,
running ones end, at most ``READERS_WAIT_S``) and the ingest thread waits only for the copy; a
reader outside csmd (sqlite3, datasette) is waited for at most ``RESTART_WAIT_MS``, and the
rewind is retried later if one is in the way. The TRUNCATE comes when no commit has come for
``IDLE_S``: it waits for readers as it is (at most ``RESTART_WAIT_MS``), without holding queries
back, which a burst of requests would meet as "busy". Durability is unchanged: when pages reach the database file does not decide whether
a committed transaction survives a crash (the WAL does).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from csm.daemon import heap
from csm.daemon.sinks import Sink
from csm.daemon.store import FileRow
from csm.daemon.turns import Turns

if TYPE_CHECKING:
    from csm.daemon.batch import Batch

log = logging.getLogger("csm.checkpoint")

EVERY_FRAMES = 256
"""WAL pages between checkpoints (4 MB of 16 KB pages; SQLite's default is about 4 MB too)."""
PAGES_PER_COMMIT = 16
"""Pages a commit writes besides its lines' own (measured: 300 one-line commits, 76 MB of WAL)."""
IDLE_S = 2.0
"""No commit for this long ends a burst: the WAL file is then truncated to nothing."""
RESTART_WAIT_MS = 100
"""How long a RESTART may wait for the writer and old readers before it gives up."""
READERS_WAIT_S = 0.1
"""How long a rewind waits for csmd's running queries before it gives up until the next poke."""
RESTART_BYTES = 16 << 20
"""WAL size above which the WAL is rewound even while the writer is busy (a backlog), if no query runs."""
QUERIED_RESTART_BYTES = 64 << 20
"""WAL size above which it is rewound even if queries must wait for it: each such rewind holds them back
for up to ``READERS_WAIT_S`` and a commit, so at 16 MB, 4-5 a second under bench/soak.py's load, the 20
clients got 30 % fewer answers; at 64 MB, 18 % fewer than with no draining, for a WAL peak of 74-88 MB."""


class Checkpointer(Sink):
    """The sink that pokes, and the thread that checkpoints."""

    name = "checkpoint"

    def __init__(self, db: Path, writer: sqlite3.Connection, turns: Turns) -> None:
        self.thread = threading.Thread(target=self.run, name="csm-checkpoint", daemon=True)
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        # Short: a pending RESTART blocks new write transactions while it waits for old readers
        # (a long ``csm query sql``), so it gives up quickly and is simply tried again later.
        self.conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
        self.writer = writer
        self.turns = turns
        self.readers_wait_s = READERS_WAIT_S
        self.due = threading.Event()
        """Wakes the thread: a checkpoint is due, a burst began, or csmd stops."""
        self.checkpoint_due = False
        self.stopping = False
        self.pending = 0
        """WAL pages written since the last poke (an estimate, see ``committed``)."""
        self.checkpoints = 0
        self.commits = 0
        self.truncated_at = 0
        """``commits`` when the WAL was last emptied: any difference means there is something to truncate."""
        self.quiet_at = 0.0
        """When the WAL may be truncated (monotonic): ``IDLE_S`` after the last commit or failed attempt."""
        self.page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        self.restart_frames = RESTART_BYTES // self.page_size
        self.queried_restart_frames = QUERIED_RESTART_BYTES // self.page_size

    def start(self) -> None:
        self.writer.execute("PRAGMA wal_autocheckpoint = 0")
        self.thread.start()

    def committed(self, batches: Sequence[tuple[FileRow, Batch]]) -> None:
        """On the ingest thread after each commit: count the WAL's growth."""
        self.wrote(PAGES_PER_COMMIT + sum(len(r.raw) for _, b in batches for r in b.rows) // self.page_size)

    def wrote(self, pages: int) -> None:
        """On the writer's thread after a commit of about ``pages`` pages (the estimate, used when SQLite's
        own count cannot be read): poke when enough, time the quiet."""
        written = heap.pages_written(self.writer)
        self.pending += pages if written is None else written
        self.commits += 1
        self.quiet_at = time.monotonic() + IDLE_S
        if self.pending >= EVERY_FRAMES:
            self.pending = 0
            self.checkpoint_due = True
            self.due.set()
        elif self.commits == self.truncated_at + 1:  # the first since the WAL was emptied: time the quiet
            self.due.set()

    def run(self) -> None:
        while True:
            idle = self.commits != self.truncated_at
            self.due.wait(max(0.0, self.quiet_at - time.monotonic()) if idle else None)
            self.due.clear()
            if self.stopping:
                return
            try:
                if self.checkpoint_due:
                    self.checkpoint_due = False
                    self.checkpoint()
                elif idle and time.monotonic() >= self.quiet_at:
                    self.truncate()
            except sqlite3.Error as e:  # busy or disk trouble: the next poke tries again
                log.warning("checkpoint failed: %s", e)
                self.quiet_at = time.monotonic() + IDLE_S

    def checkpoint(self) -> None:
        _, frames, done = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        # All copied (appends trickling in, not a backlog): rewinding costs no copying, only a wait
        # for the writer's current commit, and keeps the WAL at a few MB instead of RESTART_BYTES;
        # but not at the price of holding queries back: only if none is running.
        if frames >= self.queried_restart_frames:
            wait_s = self.readers_wait_s
        elif frames >= self.restart_frames or (frames == done and frames >= EVERY_FRAMES):
            wait_s = 0.0
        else:
            return
        with self.turns.between_reads(wait_s) as drained:
            if drained:
                self.conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()

    def truncate(self) -> None:
        """After a burst: copy the whole WAL into the database and cut the file to zero bytes."""
        commits = self.commits
        busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:  # a reader (or the writer, again busy) kept it from finishing: try after the next quiet spell
            self.quiet_at = time.monotonic() + IDLE_S
        else:
            self.truncated_at = commits
            self.checkpoints += 1

    def stop(self) -> None:
        """Stop the thread and close its connection (before the writer's, so the WAL can go)."""
        self.stopping = True
        self.due.set()
        if self.thread.is_alive():
            self.thread.join()
        self.conn.close()
        try:
            self.writer.execute("PRAGMA wal_autocheckpoint = 1000")
        except sqlite3.Error:
            pass

"""The mirror thread: csmd's local archive, followed into the team's PostgreSQL.

It runs beside the ingest thread and never delays it: it reads the archive on its own read-only
connection (WAL: readers never wait for the writer) and writes one thing locally, its position
(``team_mirror``), on a connection of its own. The position moves only after PostgreSQL has
committed the batch, and every row there is an upsert keyed by its local identity, so a crash, a
network cut or a server restart at any moment ends with each shared row in PostgreSQL once: the
batch in flight is simply sent again.

While PostgreSQL cannot be reached, ingestion goes on as always (the mirror only falls behind);
the mirror retries with backoff (1 s doubling to 60 s) and catches up by itself. psycopg is
imported when the mirror is made (on csmd's main thread, without Python's ``ssl``: ``driver``), and
this module only when ``[team]`` is set, so csmd without team mode pays nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from csm.daemon import heap, rawtext
from csm.shared.config import Team
from csm.shared.protocol import TeamStatusReply
from csm.team import batch, driver

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("csm.team")

BACKOFF_MAX_S = 60.0
IDLE_CHECK_S = 5.0
"""Caught up, the mirror sleeps until the ingest thread commits, or this long (a safety net)."""


def connect(team: Team) -> psycopg.Connection:
    """A connection as the member. keepalives and a user timeout notice a cut network in about a
    minute instead of the kernel's two hours; libpq reads the password from its own files."""
    return driver.load().connect(team.conninfo(), connect_timeout=10, keepalives=1, keepalives_idle=30,
                                 keepalives_interval=10, keepalives_count=3, tcp_user_timeout=60_000,
                                 application_name=f"csmd {team.member}@{team.machine}")


class Mirror(threading.Thread):
    def __init__(self, db: Path, team: Team) -> None:
        super().__init__(name="csm-team", daemon=True)
        driver.load()  # now, while no other thread imports anything (it blocks ``ssl`` for a moment)
        self.db = db
        self.team = team
        self.shared = batch.Projects(team)
        self.stopping = threading.Event()
        self.due = threading.Event()
        self.resync_requested = False
        self.connected = False
        self.last_error: str | None = None
        self.last_sent_at: str | None = None
        self.rows_sent = 0

    # --- other threads --------------------------------------------------------------

    def committed(self, *args: object) -> None:
        """Called after each commit (``sinks.OnCommit``): new lines, wake up (cheap: sets an event)."""
        self.due.set()

    def resync(self) -> None:
        """Send the whole history again from the first line (with what is shared now)."""
        self.resync_requested = True
        self.due.set()

    def stop(self) -> None:
        self.stopping.set()
        self.due.set()

    def status(self, conn: sqlite3.Connection) -> TeamStatusReply:
        """What ``csm team status`` shows, read on a query thread's connection."""
        position, archive = conn.execute("SELECT position, archive FROM team_mirror").fetchone()
        head = conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0
        behind_s = None
        if head > position:
            ts = conn.execute("SELECT timestamp FROM events WHERE id > ? AND timestamp IS NOT NULL ORDER BY id "
                              "LIMIT 1", (position,)).fetchone()
            at = batch._at(ts[0]) if ts else None
            behind_s = round(max(0.0, (datetime.now(UTC) - at).total_seconds()), 1) if at else None
        t = self.team
        return TeamStatusReply(
            configured=True, member=t.member, machine=t.machine, share=t.share, target=t.conninfo(),
            archive=archive, connected=self.connected, position=position, head=head,
            behind_rows=max(0, head - position), behind_s=behind_s, last_error=self.last_error,
            last_sent_at=self.last_sent_at, rows_sent=self.rows_sent)

    # --- the thread ------------------------------------------------------------------

    def run(self) -> None:
        reader = rawtext.register(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, isolation_level=None), self.db)
        writer = sqlite3.connect(self.db, isolation_level=None)
        for c in (reader, writer):
            c.execute("PRAGMA busy_timeout = 10000")
            c.execute("PRAGMA cache_size = -256")  # it reads each line once: a cache buys nothing, costs RSS
        pg: psycopg.Connection | None = None
        backoff = 1.0
        try:
            while not self.stopping.is_set():
                try:
                    if pg is None or pg.closed:
                        pg = connect(self.team)
                        if self.last_error is not None or not self.connected:
                            log.info("team: connected to %s as %s@%s", self.team.conninfo(), self.team.member,
                                     self.team.machine)
                        self.connected = True
                    if self.resync_requested:
                        self.resync_requested = False
                        writer.execute("UPDATE team_mirror SET position = 0")
                        log.info("team: re-sending the whole history")
                    sent = self._step(reader, writer, pg)
                    if sent:
                        # The batch's copies of its text (SQLite's, the strs, psycopg's bytes) are freed now,
                        # into glibc's heaps, which would keep the pages: 1.6 MB of csmd's RSS while mirroring.
                        heap.TRIM.soon()
                    self.last_error, backoff = None, 1.0  # a batch went through (or there was none): all is well
                    if not sent:
                        self.due.wait(IDLE_CHECK_S)
                        self.due.clear()
                except Exception as e:  # PostgreSQL gone, refused, a row refused: keep the position, retry later
                    self._failed(e, backoff)
                    if pg is not None:
                        pg.close()
                    pg = None
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
        finally:
            if pg is not None:
                pg.close()
            reader.close()
            writer.close()

    def _step(self, reader: sqlite3.Connection, writer: sqlite3.Connection, pg: psycopg.Connection) -> bool:
        """Send the next batch; False when there was nothing to send."""
        position, archive = reader.execute("SELECT position, archive FROM team_mirror").fetchone()
        b = batch.read(reader, position, self.team, self.shared, archive)
        if b is None:
            return False
        batch.send(pg, b, self.team)
        # Only now, after PostgreSQL's commit. A crash before this line re-sends the batch: upserts absorb it.
        writer.execute("UPDATE team_mirror SET position = ?, synced_at = ? WHERE position = ?",
                       (b.high, datetime.now(UTC).isoformat(timespec="seconds"), position))
        self.rows_sent += b.rows
        self.last_sent_at = datetime.now(UTC).isoformat(timespec="seconds")
        if b.longest > batch.LONG_VALUE:
            # libpq grows its output buffer to the largest message sent and never shrinks it (a 10 MB
            # prompt, its line and its prose: 26 MB held): closing frees it; the next step reconnects.
            pg.close()
        return True

    def _failed(self, e: Exception, backoff: float) -> None:
        message = " ".join(str(e).split()) or type(e).__name__
        if message != self.last_error:  # once per distinct error, not once per retry
            log.warning("team: %s; retrying in %.0f s (local archiving goes on)", message, backoff)
        self.connected = False
        self.last_error = message

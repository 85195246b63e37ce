"""Is the database csmd writes still sound, and still the file at its path?

Two faults would otherwise go unnoticed until a query fails: damaged pages (a disk error, a
tool writing into the file) and the file deleted or replaced under csmd (a clean-up script, a
restore copied over it), after which csmd writes into a file no query and no restart sees.

- ``quick_check`` (pages, b-trees, records; not indexes against tables) runs at start and
  every ``check_interval_s``, on a fresh read-only connection (so it reads the file, not a
  cache) in a thread of idle priority (``SCHED_IDLE``, which also makes its I/O idle): a WAL
  reader never blocks the writer, and SQLite lets go of the GIL while it reads, so neither
  ingestion nor queries wait for it.
- The (device, inode) of the database and its WAL when csmd opened them are compared with
  what their paths hold now: at each check, before each rescan, on each ``csm status``.

A problem is logged once and shown by ``csm status`` while it lasts; csmd goes on ingesting.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

from csm.daemon.diagnose import way_out
from csm.daemon.store import now_iso
from csm.shared import paths

log = logging.getLogger("csm.health")

SHOWN = 5
"""Problems quick_check lists at most (the first is shown, the rest counted)."""


def _idle_priority() -> None:
    """This thread only runs when nothing else wants the CPU (Linux; elsewhere it keeps its priority)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: the calling thread
    except (AttributeError, OSError):
        pass


class Health(threading.Thread):
    def __init__(self, db: Path, interval_s: float) -> None:
        super().__init__(name="csm-health", daemon=True)
        self.db = db
        self.interval_s = interval_s
        self.files = paths.db_files(db)[:2]  # the database and its WAL; the -shm is rebuilt by SQLite
        self.opened: dict[Path, tuple[int, int] | None] = {p: self._identity(p) for p, _ in self.files}
        self.damage: str | None = None
        self.checked_at: str | None = None
        self.reported: str | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conn: sqlite3.Connection | None = None
        """The connection of the check in progress, for ``stop`` to interrupt."""

    @staticmethod
    def _identity(path: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def moved(self) -> str | None:
        """Whether the database or WAL csmd has open is no longer the file at its path (two ``stat``s)."""
        for path, what in self.files:
            was = self.opened[path]
            now = self._identity(path)
            if was is None:  # the WAL appears with the first transaction
                self.opened[path] = now
            elif now is None:
                return (f"the {what} {path} was deleted while csmd had it open: new lines go to a file no one "
                        "else can see, and new queries fail; restart csmd (stopping, it writes what it holds "
                        "into the database file, if that still exists)")
            elif now != was:
                return (f"the {what} {path} was replaced by another file while csmd had it open: csmd still "
                        "writes the one it opened; restart csmd to use the file now at that path")
        return None

    def problem(self) -> str | None:
        """What is wrong with the database now (None: nothing known), logged when it first shows.

        Damage is one problem however its wording changes from check to check (an open that fails,
        then a list of bad pages): status shows the latest wording, the log says it once."""
        moved = self.moved()
        problem = moved or self.damage
        kind = moved or ("damage" if self.damage else None)
        with self.lock:
            if kind != self.reported:
                if problem:
                    log.error("database: %s", problem)
                else:
                    log.info("database: the earlier problem is gone")
                self.reported = kind
        return problem

    def check(self) -> None:
        """``quick_check`` the file as it is on disk now."""
        try:
            conn = self.conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, isolation_level=None,
                                               check_same_thread=False)
            try:
                if self.stopping.is_set():
                    return
                conn.execute("PRAGMA cache_size = -1024")  # it reads every page once: a cache buys nothing
                found = [r[0] for r in conn.execute(f"PRAGMA quick_check({SHOWN})")]
            finally:
                self.conn = None
                conn.close()
        except sqlite3.Error as e:
            if self.stopping.is_set():
                return  # interrupted by ``stop``
            found = [f"{type(e).__name__}: {e}"]
        self.checked_at = now_iso()
        if found == ["ok"]:
            self.damage = None
        else:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            self.damage = (f"quick_check found damage in {self.db}: {found[0]}{more}; "
                           f"csmd goes on adding lines, but stored ones may be unreadable; {way_out(self.db)}")
        self.problem()

    def run(self) -> None:
        _idle_priority()
        while not self.stopping.is_set():
            self.check()
            self.stopping.wait(self.interval_s)

    def stop(self) -> None:
        """Stop, cutting a check in progress short (a large database takes a while to read)."""
        self.stopping.set()
        conn = self.conn
        if conn is not None:
            try:
                conn.interrupt()
            except sqlite3.ProgrammingError:
                pass  # the check closed it meanwhile
        if self.is_alive():
            self.join()

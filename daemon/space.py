"""Free pages given back to the file system, a few at a time, when the ingest thread is idle.

Why: the database file never shrinks by itself: pages freed by deleted rows (the search index's
deferred tool text, the usage sink's replaced copies, compressed lines) stay in the file as a free
list. With ``auto_vacuum = INCREMENTAL`` (a new database from its first page; an existing one
rewritten once by migration 8, ``incremental_vacuum``) SQLite can move pages from the end of the file into those holes
and cut the end off, ``STEP_PAGES`` at a time. Each step is its own short write transaction on the
writer's connection, run as the ingest thread's idle work (``Space``, an ingest sink), and the loop
stops as soon as a hint waits, so a fresh line waits at most one step (a few ms). The file itself
shrinks when the checkpoint thread copies the step into it, so each step is counted as WAL pages
written (``wrote``): the idle TRUNCATE checkpoint then follows.
"""

from __future__ import annotations

from collections.abc import Callable

from csm.daemon.sinks import Sink
from csm.daemon.store import Store

STEP_PAGES = 64
"""Pages given back per transaction: 1 MB of 16 KB pages, a few ms of the writer."""
MIN_FREE_PAGES = 64
"""Fewer free pages than this are left for the next inserts to reuse, not worth a transaction."""


def give_back(store: Store, busy: Callable[[], bool], wrote: Callable[[int], None]) -> int:
    """Return free pages to the file system until none is left or ``busy()``; the pages returned."""
    q = store.conn.execute
    freed = 0
    free = q("PRAGMA freelist_count").fetchone()[0]
    if free < MIN_FREE_PAGES or q("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return 0
    while free and not busy():
        with store.transaction():
            # The pragma moves one page per step, and Python's sqlite3 steps it once (it declares no
            # columns, so it is not read as a query): one call per page (was one page a transaction).
            for _ in range(min(free, STEP_PAGES)):
                q("PRAGMA incremental_vacuum(1)")
        left = q("PRAGMA freelist_count").fetchone()[0]
        wrote(2 * (free - left))  # each page moved is written, and its pointer-map page
        freed += free - left
        free = left
    return freed


class Space(Sink):
    """``give_back`` as the ingest thread's idle step, each step's pages counted to the checkpoint thread."""

    name = "space"

    def __init__(self, wrote: Callable[[int], None]) -> None:
        self.wrote = wrote

    def idle(self, store: Store, stop: Callable[[], bool]) -> None:
        give_back(store, stop, self.wrote)

"""Giving memory back after a long line, so csmd returns to its usual size.

A line of tens of MB passes through buffers that outlive it. SQLite keeps each prepared
statement's last bound values until the statement runs again, and Python's sqlite3 keeps
the writer's statements prepared: after a 50 MB prompt, the ``events`` insert, the
``message_text`` insert and the search index insert each held a 50 MB copy (150 MB) until
the next line came. ``release`` clears the bindings and trims the heap; it is called after a
batch that held a long line, not after every batch (it walks the statements), and during
that batch each ``executemany`` clears them as soon as it has run (``WriterConnection``).

glibc gives a freed block back to the system only if it was mmapped, and after each such free
it raises its mmap threshold to that block's size (up to 32 MB): after one long line, every
buffer of a few MB (a query's reply, an export's chunks) came from the heap and stayed there
(a ``SELECT length(raw)`` of a 24 MB line: +26 MB for good). ``configure`` fixes the threshold
at 1 MB, so what is that large always goes back when freed.

Python's sqlite3 exposes neither the connection's handle nor ``sqlite3_clear_bindings``,
so they are reached through ctypes: the handle is the first field of the connection
object, and it is used only if SQLite confirms it (``sqlite3_db_filename`` gives back the
database's path); with any other layout, or another platform, ``release`` only trims.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("csm.heap")


def _sqlite_library() -> ctypes.CDLL | None:
    """The SQLite that Python's own sqlite3 uses (its symbols are found through _sqlite3's handle)."""
    try:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)
        lib.sqlite3_db_filename.restype = ctypes.c_char_p
        lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.sqlite3_next_stmt.restype = ctypes.c_void_p
        lib.sqlite3_next_stmt.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.sqlite3_clear_bindings.argtypes = [ctypes.c_void_p]
        lib.sqlite3_stmt_busy.argtypes = [ctypes.c_void_p]
        lib.sqlite3_hard_heap_limit64.restype = ctypes.c_int64
        lib.sqlite3_hard_heap_limit64.argtypes = [ctypes.c_int64]
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        lib.sqlite3_db_status.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                          ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        return lib
    except (ImportError, OSError, AttributeError):
        return None


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_SQLITE = _sqlite_library()
_LIBC = _libc()
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
M_ARENA_MAX = -8
ARENA_MAX = 2


def configure() -> None:
    """At start: blocks of 1 MB and more are mmapped, so freeing one returns it (see above); and
    two malloc arenas, not one per thread up to 8 per core: each arena keeps its own free memory,
    and csmd's dozen threads (ingest, queries, checkpoint, health, ZeroMQ, watchdog) spread
    csmd's heap over as many."""
    if _LIBC is not None:
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _LIBC.mallopt(M_ARENA_MAX, ARENA_MAX)


def _handle(conn: sqlite3.Connection) -> int | None:
    """The ``sqlite3*`` of ``conn``, if SQLite confirms it is the connection to ``conn``'s database."""
    if _SQLITE is None:
        return None
    path = next(file for _, name, file in conn.execute("PRAGMA database_list") if name == "main")
    db = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not db:
        return None
    name = _SQLITE.sqlite3_db_filename(db, b"main")
    return db if name is not None and path and os.path.samefile(name.decode(), path) else None


def clear_bindings(conn: sqlite3.Connection) -> None:
    """Drop the values bound to ``conn``'s statements that are not running (Python binds every
    value again before each run, so nothing depends on them)."""
    try:
        db = _handle(conn)
    except OSError:
        db = None
    if db is not None:
        stmt = _SQLITE.sqlite3_next_stmt(db, None)  # type: ignore[union-attr]
        while stmt:
            if not _SQLITE.sqlite3_stmt_busy(stmt):  # type: ignore[union-attr]
                _SQLITE.sqlite3_clear_bindings(stmt)  # type: ignore[union-attr]
            stmt = _SQLITE.sqlite3_next_stmt(db, stmt)  # type: ignore[union-attr]


SQLITE_DBSTATUS_CACHE_WRITE = 9


def pages_written(conn: sqlite3.Connection) -> int | None:
    """Pages ``conn`` wrote to the WAL since the last call (``sqlite3_db_status``, CACHE_WRITE, reset
    each time), for the checkpoint thread's pokes; None where SQLite cannot be reached."""
    try:
        db = _handle(conn)
    except OSError:
        db = None
    if db is None:
        return None
    current, highest = ctypes.c_int(), ctypes.c_int()
    if _SQLITE.sqlite3_db_status(db, SQLITE_DBSTATUS_CACHE_WRITE, ctypes.byref(current),  # type: ignore[union-attr]
                                 ctypes.byref(highest), 1):
        return None
    return current.value


class WriterConnection(sqlite3.Connection):
    """The writer's connection: while ``long_line`` is set, each ``executemany`` drops its bound
    values as soon as it has run, so the inserts of one long line (the row, its prose, its search
    entry) do not each hold a copy of it until the transaction ends."""

    long_line = False

    def executemany(self, sql: str, rows: Any, /) -> sqlite3.Cursor:  # type: ignore[override]
        cur = super().executemany(sql, rows)
        if self.long_line:
            clear_bindings(self)
        return cur


def release(conn: sqlite3.Connection) -> None:
    """Free what the last long line left behind: ``conn``'s statements' bound values, SQLite's
    unused cache pages, and glibc's free heap memory."""
    clear_bindings(conn)
    conn.execute("PRAGMA shrink_memory")
    trim()


def trim() -> None:
    """glibc's free memory back to the system: free pages inside its heaps too, not only at their top
    (about 0.02 ms when there is nothing to give back)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class SqliteCap:
    """SQLite's whole heap, capped (``hard_heap_limit``, process-wide), with room made for a long line.

    What the cap is for: a query making many big values at once (``SELECT randomblob(6e7),
    randomblob(6e7), …``: each under the length limit, together 480 MB) fails with "out of
    memory" instead of taking csmd with it. Everyday csmd needs far less than the cap: a few MB
    of page cache per connection, and one reply's values (``query_max_bytes``). The writer
    storing one long line needs more: each insert of it (the ``events`` row, its prose for
    ``message_text`` and the search index) binds a copy and builds a record, two copies at a time
    with ``WriterConnection`` (a 50 MB line: 112 MB at SQLite's peak), so ``room_for`` raises the
    cap by five times the line while it is stored (queries get that room too meanwhile), then
    lowers it and gives back what the line left (``release``). The pragma can only lower the cap, so it is set through ctypes;
    without them there is no cap (the length limit on each value still holds).
    """

    SLACK = 32 << 20
    """Page caches and schemas of csmd's connections, on top of one reply."""

    def __init__(self, conn: sqlite3.Connection, query_max_bytes: int) -> None:
        self.conn = conn
        self.base = query_max_bytes + self.SLACK
        self._set(self.base)

    def _set(self, limit: int) -> None:
        if _SQLITE is not None:
            _SQLITE.sqlite3_hard_heap_limit64(limit)

    @contextmanager
    def room_for(self, line_bytes: int) -> Iterator[None]:
        """Around storing a line of ``line_bytes`` read alone (longer than a batch)."""
        self._set(self.base + 5 * line_bytes)
        if isinstance(self.conn, WriterConnection):
            self.conn.long_line = True
        try:
            yield
        finally:
            if isinstance(self.conn, WriterConnection):
                self.conn.long_line = False
            release(self.conn)
            # Back to the cap, or just above what SQLite still holds (if the bindings could not be
            # cleared), so that nothing fails for want of memory already taken.
            used = _SQLITE.sqlite3_memory_used() if _SQLITE is not None else 0
            self._set(max(self.base, used + self.SLACK))


class Trimmer:
    """glibc's free heap pages given back while csmd works, not only when a phase ends.

    What a batch, a catch-up transaction or a query's reply freed stays in glibc's heap, resident,
    until ``malloc_trim`` (glibc returns only the top of the heap by itself): a 20 MB reply left csmd
    14 MB larger for good, and under four clients during a 1 GB sync 2-5 MB of csmd's RSS was such free
    memory. ``malloc_trim`` walks every free chunk (≈ 0.1 ms per MB of heap: 1-2 ms for csmd's), so it
    runs at most once every ``EVERY_S``, on the main loop: ``soon`` (any thread, once what it freed is
    freed) owes a trim and wakes the loop (``wake``), whose ``tick`` pays it when it is due.
    """

    EVERY_S = 1.0

    def __init__(self) -> None:
        self.last = 0.0
        self.owed = False
        self.lock = threading.Lock()
        self.wake: Callable[[], None] | None = None
        """Wakes the main loop (``Server.wake``), so that it asks ``tick`` when the trim is due."""

    def soon(self) -> None:
        """Something large was freed: owe a trim (one wake-up however often it is asked)."""
        with self.lock:
            if self.owed:
                return
            self.owed = True
        if self.wake is not None:
            self.wake()

    def tick(self) -> float | None:
        """Pay an owed trim if it is due; the seconds until it is, or None if none is owed."""
        with self.lock:
            if not self.owed:
                return None
            wait = self.last + self.EVERY_S - time.monotonic()
            if wait > 0:
                return wait
            self.last = time.monotonic()
            self.owed = False
        trim()
        return None


TRIM = Trimmer()
"""csmd's one trimmer: owed by the writer's commits and answered requests, paid by the main loop."""

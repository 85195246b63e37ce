"""Live appends first: queries take turns with the ingest thread while it stores fresh lines.

Why: under load (20 clients querying while 2,000 lines/s are appended) the ingest thread
spent about two thirds of its time runnable but not running: two query threads, csmd's
other threads and every other process on the machine shared the cores with it, and a
round of appends took three to four times its CPU time, so a line waited up to a second or
two before it could be queried (bench/RESULTS.md, "Freshness under load"). Switching the
interpreter more often changed nothing; the wait is for a core, not for the GIL.

So while the ingest thread stores the lines of watcher hints (``appending``), every query
thread steps aside in turns: it runs ``RUN_S``, then sleeps until the round ends or
``PAUSE_S`` passes, whichever is first. Queries keep at least half their pace under a
steady stream of appends and lose nothing when there is none. A rescan or a catch-up
(a large backlog) is not ``appending``: queries do not wait for it.

The pause happens where a query can stop cheaply: before it starts and in SQLite's progress
handler (every ``STEPS`` virtual-machine steps, with the time limit); the sleep releases the
GIL and the core.

The WAL's rewind waits for queries, not the ingest thread. A RESTART checkpoint takes the write
lock and then waits for every reader still on an older snapshot; with 20 clients there always is
one, so each rewind held the ingest thread for its whole wait (100 ms) and was freshness's p99
(250-330 ms; 113-166 ms with no rewind at all, but a WAL of 1 GB). So the checkpoint thread first
holds new queries back and waits for csmd's running ones to end (``between_reads``), and only then
rewinds: the write lock is held for the copy of the last frames, and queries wait instead, a few ms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

RUN_S = 0.02
"""How long a query runs between pauses while appends are being stored."""
PAUSE_S = 0.02
"""The longest a query pauses at a time, so it keeps at least RUN_S / (RUN_S + PAUSE_S) of its pace."""
STEPS = 10_000
"""SQLite virtual-machine steps between progress-handler calls (well under a millisecond)."""
HOLD_S = 0.25
"""The longest a new query is held back while the WAL is rewound (the rewind gives up sooner)."""


class Turns:
    def __init__(self) -> None:
        self.quiet = threading.Event()
        """Set while the ingest thread stores no hinted lines."""
        self.quiet.set()
        self.local = threading.local()
        self.gate = threading.Condition()
        self.running = 0
        """Queries running now (``reading``)."""
        self.held = False
        """Set while the WAL is rewound: new queries wait (``between_reads``)."""

    @contextmanager
    def appending(self) -> Iterator[None]:
        """On the ingest thread, around storing the lines of hints: queries step aside meanwhile."""
        self.quiet.clear()
        try:
            yield
        finally:
            self.quiet.set()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """On a query's thread, around the query: counted, so a rewind of the WAL waits for it; and
        not started while one is being done."""
        with self.gate:
            if self.held:
                self.gate.wait_for(lambda: not self.held, HOLD_S)
            self.running += 1
        try:
            yield
        finally:
            with self.gate:
                self.running -= 1
                if not self.running:
                    self.gate.notify_all()

    @contextmanager
    def between_reads(self, wait_s: float) -> Iterator[bool]:
        """On the checkpoint thread: hold new queries back and wait up to ``wait_s`` for the running ones
        to end; yields whether they did (a long export may not), and lets queries go on afterwards."""
        with self.gate:
            self.held = True
            drained = self.gate.wait_for(lambda: not self.running, wait_s)
        try:
            yield drained
        finally:
            with self.gate:
                self.held = False
                self.gate.notify_all()

    def give_way(self) -> None:
        """On a query thread: pause if appends are being stored and this thread has had its turn."""
        if self.quiet.is_set() or self.held:  # a rewind of the WAL waits for this query: end it first
            return
        if time.monotonic() < getattr(self.local, "turn_ends", 0.0):
            return
        self.quiet.wait(PAUSE_S)
        self.local.turn_ends = time.monotonic() + RUN_S


_local = threading.local()


def on_query_thread(give_way: Callable[[], None]) -> None:
    """Make the queries of this thread call ``give_way`` (a query pool's thread initializer)."""
    _local.give_way = give_way


def give_way() -> None:
    """What the current thread's queries do at each progress step (nothing outside the pool)."""
    hook = getattr(_local, "give_way", None)
    if hook is not None:
        hook()

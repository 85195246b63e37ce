"""The ingest thread's loop: hints in, batches out, a rescan as the safety net.

Other threads only ever *hint* (``hint``, ``hint_dir``, ``hint_move``, ``request_sync``,
``request_rescan``): they add to a coalescing set under a condition variable and return
at once, so a watchdog handler can never block or raise. This thread drains the set,
visits each path once however many events it got (the paths drained together are stored in one
transaction, ``Ingestor.visit_together``), and runs a reconciliation rescan on
start, every ``rescan_interval_s`` (``poll_s`` while the watcher cannot watch) and on
``csm sync``. It blocks on the condition between jobs, so an idle daemon uses no CPU.

A database error (disk full, locked by another program) rolls its transaction back; the
paths go back into the set and the thread retries with capped exponential backoff,
resuming by itself when the cause goes away; sync requests waiting meanwhile are
answered at once with the error (``unavailable``), not left to time out. Any other
error is a bug: it is logged with its traceback, the work in hand is dropped (the next
rescan retries it) and the thread goes on, because a dead ingest thread would leave a
daemon that answers but never ingests again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from csm.daemon import heap
from csm.daemon.diagnose import diagnose
from csm.daemon.ingest import Ingestor
from csm.daemon.rescan import Totals
from csm.daemon.turns import Turns
from csm.shared.errors import DaemonError, Unavailable
from csm.shared.protocol import Backlog, Error, Message, Progress, SyncReply

log = logging.getLogger("csm.sync")

Reply = Callable[[Message], None]
PROGRESS_EVERY_S = 0.2
ROUND_GAP_S = 0.03
"""Rounds of appends begin at most this often. Under a steady stream (bench/soak.py: 2,000 lines/s in
50 files, 20 clients querying) the ingest thread otherwise began a round as soon as the last ended,
~90 small commits a second at 30 % more CPU per line than ~30 larger ones, CPU the queries then
lacked; a lone append after a quiet moment is not delayed at all."""
BACKOFF_MAX_S = 60.0


class Syncer(threading.Thread):
    def __init__(self, ingestor: Ingestor, rescan_interval_s: float, db: Path, turns: Turns) -> None:
        super().__init__(name="csm-ingest", daemon=True)
        self.ingestor = ingestor
        self.db = db
        """The database, to say what a database error really is (``diagnose``)."""
        self.rescan_interval_s = rescan_interval_s
        self.poll_s: float | None = None
        """Set while the watcher cannot watch: rescans this often instead."""
        self.cond = threading.Condition()
        self.paths: dict[str, None] = {}
        self.dirs: dict[str, None] = {}
        self.moves: list[tuple[str, str]] = []
        self.waiters: list[Reply] = []
        self.serving: list[Reply] = []
        """Waiters of the rescan in progress; they and the pending ones get its progress."""
        self.rescan_due = True
        self.state = "starting"
        self.last_sync_at: str | None = None
        self.last_error: str | None = None
        self.before_rescan: list[Callable[[], None]] = []
        self.after_new_dirs: list[Callable[[], None]] = []
        self.scans = 0
        self.round_due = 0.0
        """When the next round of appends may begin (``ROUND_GAP_S``)."""
        self.turns = turns
        """Queries step aside while this thread stores the lines of hints (``daemon/turns.py``)."""
        ingestor.live_first = self.live_first

    # --- called from other threads -------------------------------------------------

    def hint(self, path: str) -> None:
        with self.cond:
            self.paths[path] = None
            self.cond.notify()

    def hint_dir(self, *paths: str) -> None:
        """Folders to rescan; several at once (a rename's old and new path) are taken together."""
        with self.cond:
            for path in paths:
                self.dirs[path] = None
            self.cond.notify()

    def hint_move(self, src: str, dest: str) -> None:
        with self.cond:
            self.moves.append((src, dest))
            self.cond.notify()

    def request_sync(self, reply: Reply) -> None:
        """Rescan and ``reply`` when done; meanwhile ``reply`` gets the progress of whatever is under way."""
        with self.cond:
            self.waiters.append(reply)
            self.rescan_due = True
            self.cond.notify()

    def request_rescan(self) -> None:
        with self.cond:
            self.rescan_due = True
            self.cond.notify()

    def stop(self) -> None:
        self.ingestor.stopping.set()
        with self.cond:
            self.cond.notify()

    def busy(self) -> bool:
        """Whether hints, moves or a sync request wait (read without the lock: a hint is enough)."""
        return bool(self.paths or self.dirs or self.moves or self.waiters or self.rescan_due)

    @property
    def backlog(self) -> Backlog | None:
        return self.ingestor.backlog

    @property
    def interval_s(self) -> float:
        return self.poll_s or self.rescan_interval_s

    # --- the thread ------------------------------------------------------------------

    def run(self) -> None:
        backoff = 0.0
        last_rescan = -float("inf")  # the interval is read afresh each time: polling may start or stop
        stopping = self.ingestor.stopping
        while not stopping.is_set():
            with self.cond:
                while not (self.paths or self.dirs or self.moves or self.rescan_due or stopping.is_set()):
                    timeout = last_rescan + self.interval_s - time.monotonic()
                    if timeout <= 0:
                        self.rescan_due = True
                        break
                    self.cond.wait(timeout)
                if stopping.is_set():
                    break
                # Appends only, and the last round began a moment ago: let their hints gather until
                # ROUND_GAP_S after it, so a steady stream is stored in fewer, larger rounds.
                while (self.paths and not (self.dirs or self.moves or self.rescan_due or stopping.is_set())
                       and (left := self.round_due - time.monotonic()) > 0):
                    self.cond.wait(left)
                if self.paths:
                    self.round_due = time.monotonic() + ROUND_GAP_S
                paths, self.paths = self.paths, {}
                dirs, self.dirs = self.dirs, {}
                moves, self.moves = self.moves, []
                rescan, self.rescan_due = self.rescan_due, False
                waiters, self.waiters = self.waiters, []
                self.serving = waiters
            try:
                self._work(paths, dirs, moves, rescan, waiters)
            except Exception as e:  # the ingest thread must never die: back off and retry
                backoff = min(BACKOFF_MAX_S, backoff * 2 or 0.5)
                if isinstance(e, sqlite3.Error):
                    what = f"database: {diagnose(self.db, e, 'cannot write')}"
                else:
                    what = f"internal error {type(e).__name__}: {e}"
                self.last_error = f"{what}; retrying in {backoff:.1f} s"
                if isinstance(e, sqlite3.Error):
                    log.error("%s", self.last_error)
                else:
                    log.exception("%s", self.last_error)
                # Whoever waits for a sync hears why now, not when its own deadline runs out.
                failed = Error.of((Unavailable if isinstance(e, sqlite3.Error) else DaemonError)(
                    f"sync not finished: {what}; csmd keeps retrying by itself ('csm status' shows the error "
                    "until it clears)"))
                for reply in waiters:
                    reply(failed)
                with self.cond:
                    for p in paths:
                        self.paths.setdefault(p)
                    for d in dirs:
                        self.dirs.setdefault(d)
                    self.moves[:0] = moves
                    self.rescan_due = self.rescan_due or rescan
                    # New hints must not cut the pause short: under a steady stream of
                    # appends that would turn the backoff into a busy retry loop.
                    resume = time.monotonic() + backoff
                    while not stopping.is_set() and (left := resume - time.monotonic()) > 0:
                        for reply in self.waiters:
                            reply(failed)
                        self.waiters.clear()
                        self.cond.wait(left)
                continue
            finally:
                self.serving = []
            if backoff:
                log.info("database writable again; ingestion resumed")
            backoff = 0.0
            self.last_error = None
            if rescan:
                last_rescan = time.monotonic()
        self.state = "stopped"

    def _progress(self) -> Callable[[], None]:
        """Send the backlog to everyone waiting on a sync, at most every ``PROGRESS_EVERY_S``."""
        last = [0.0]

        def progress() -> None:
            backlog = self.ingestor.backlog
            now = time.monotonic()
            if backlog is None or now - last[0] < PROGRESS_EVERY_S:
                return
            with self.cond:
                waiters = self.serving + self.waiters
            if waiters:
                last[0] = now
                msg = Progress(backlog=backlog)
                for reply in waiters:
                    reply(msg)

        return progress

    def _work(
        self, paths: dict[str, None], dirs: dict[str, None], moves: list[tuple[str, str]], rescan: bool,
        waiters: list[Reply],
    ) -> None:
        ing = self.ingestor
        if paths or dirs or moves:
            self.state = "ingesting"
        for src, dest in moves:
            ing.moved(src, dest)
        # A new folder's files may have been written before its watch existed; a folder moved in
        # whole may be a large history, so its progress goes to waiting syncs. A renamed folder
        # arrives as its old path and its new one: the new is scanned first, so its files claim
        # their checkpoints before the old path's are marked gone (a gone one is claimed too, later).
        for d in sorted(dirs, key=lambda d: not os.path.isdir(d)):
            ing.rescan(self._progress(), top=Path(d))
        if dirs:
            for hook in self.after_new_dirs:
                hook()
        with self.turns.appending():
            ing.visit_together(paths)
        if rescan:
            self._rescan(waiters)
        self.state = "idle"  # ingestion is done: deferred work below stops at the next hint
        ing.idle(lambda: ing.stopping.is_set() or self.busy())
        if rescan:
            # The rescan's buffers go back, and the writer's page cache that it and the idle work filled
            # (2 MB of SQLite's heap at idle, even after a rescan that changed nothing); not after a live
            # append's round, which the next append would fill again.
            heap.release(ing.store.conn)

    def live_first(self, visiting: str | None) -> None:
        """Between the files and batches of a rescan: store the lines of the files hinted meanwhile.

        A rescan with a large backlog (a first sync of a long history) takes minutes; without this a
        line appended to a live session waited for all of it. The file the rescan is visiting is left
        hinted: that visit reads it to its end anyway. On a database error the hints go back into the
        set, for the retry."""
        ing = self.ingestor
        if not self.paths or ing.live:
            return
        with self.cond:
            paths, self.paths = self.paths, {}
            if visiting in paths:
                self.paths[visiting] = paths.pop(visiting)
        ing.live = True
        try:
            with self.turns.appending():
                ing.visit_together(list(paths))
                paths.clear()
        except BaseException:
            with self.cond:
                for p in paths:
                    self.paths.setdefault(p)
            raise
        finally:
            ing.live = False

    def _rescan(self, waiters: list[Reply]) -> None:
        for check in self.before_rescan:
            check()
        self.ingestor.prepare()
        self.state = "initial sync" if self.scans == 0 else "scanning"
        started = time.monotonic()
        totals: Totals = self.ingestor.rescan(self._progress())
        totals += self.ingestor.final_lines()
        self.scans += 1
        self.last_sync_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        seconds = time.monotonic() - started
        if totals.files_changed:
            log.info("rescan: %d files, %d changed, %d lines, %d bad lines in %.2f s", totals.files_scanned,
                     totals.files_changed, totals.lines, totals.errors, seconds)
        for reply in waiters:
            reply(SyncReply(files_scanned=totals.files_scanned, files_changed=totals.files_changed,
                            lines_ingested=totals.lines, errors=totals.errors, seconds=round(seconds, 3)))

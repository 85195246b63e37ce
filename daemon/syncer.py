"""The ingest thread's loop: hints in, batches out, a rescan as the safety net.

Other threads only ever *hint* (``hint``, ``hint_dir``, ``hint_move``, ``request_sync``):
they add to a coalescing set under a condition variable and return at once, so a
watchdog handler can never block or raise. This thread drains the set, visits each
path once however many events it got, and runs a reconciliation rescan on start,
every ``rescan_interval_s`` and on ``csm sync``. It blocks on the condition between
jobs, so an idle daemon uses no CPU.

A database error (disk full, locked by another program) rolls its batch back; the
paths go back into the set and the thread retries with capped exponential backoff,
resuming by itself when the cause goes away.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from csm.daemon.ingest import Ingestor, Totals
from csm.shared.protocol import Backlog, Message, Progress, SyncReply

log = logging.getLogger("csm.sync")

Reply = Callable[[Message], None]
PROGRESS_EVERY_S = 0.2
BACKOFF_MAX_S = 60.0


class Syncer(threading.Thread):
    def __init__(self, ingestor: Ingestor, rescan_interval_s: float) -> None:
        super().__init__(name="csm-ingest", daemon=True)
        self.ingestor = ingestor
        self.rescan_interval_s = rescan_interval_s
        self.cond = threading.Condition()
        self.paths: dict[str, None] = {}
        self.dirs: dict[str, None] = {}
        self.moves: list[tuple[str, str]] = []
        self.waiters: list[Reply] = []
        self.rescan_due = True
        self.state = "starting"
        self.last_sync_at: str | None = None
        self.last_error: str | None = None
        self.before_rescan: list[Callable[[], None]] = []
        self.scans = 0

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
        with self.cond:
            self.waiters.append(reply)
            self.rescan_due = True
            self.cond.notify()

    def stop(self) -> None:
        self.ingestor.stopping.set()
        with self.cond:
            self.cond.notify()

    @property
    def backlog(self) -> Backlog | None:
        return self.ingestor.backlog

    # --- the thread ------------------------------------------------------------------

    def run(self) -> None:
        backoff = 0.0
        next_rescan = time.monotonic()
        stopping = self.ingestor.stopping
        while not stopping.is_set():
            with self.cond:
                while not (self.paths or self.dirs or self.moves or self.rescan_due or stopping.is_set()):
                    timeout = next_rescan - time.monotonic()
                    if timeout <= 0:
                        self.rescan_due = True
                        break
                    self.cond.wait(timeout)
                if stopping.is_set():
                    break
                paths, self.paths = self.paths, {}
                dirs, self.dirs = self.dirs, {}
                moves, self.moves = self.moves, []
                rescan, self.rescan_due = self.rescan_due, False
                waiters, self.waiters = self.waiters, []
            try:
                self._work(paths, dirs, moves, rescan, waiters)
            except sqlite3.Error as e:
                backoff = min(BACKOFF_MAX_S, backoff * 2 or 0.5)
                self.last_error = f"database: {e}; retrying in {backoff:.1f} s"
                log.error("%s", self.last_error)
                with self.cond:
                    for p in paths:
                        self.paths.setdefault(p)
                    for d in dirs:
                        self.dirs.setdefault(d)
                    self.moves[:0] = moves
                    self.rescan_due = self.rescan_due or rescan
                    self.waiters[:0] = waiters
                    self.cond.wait(backoff)
                continue
            if backoff:
                log.info("database writable again; ingestion resumed")
            backoff = 0.0
            self.last_error = None
            if rescan:
                next_rescan = time.monotonic() + self.rescan_interval_s
        self.state = "stopped"

    def _work(
        self, paths: dict[str, None], dirs: dict[str, None], moves: list[tuple[str, str]], rescan: bool,
        waiters: list[Reply],
    ) -> None:
        ing = self.ingestor
        for src, dest in moves:
            ing.moved(src, dest)
        # A new folder's files may have been written before its watch existed. A renamed folder
        # arrives as its old path and its new one: the new is scanned first, so its files claim
        # their checkpoints as renames before those of the vanished old path are marked gone.
        for d in sorted(dirs, key=lambda d: not os.path.isdir(d)):
            ing.rescan(top=Path(d))
        for p in paths:
            ing.visit(p)
        if not rescan:
            return
        for check in self.before_rescan:
            check()
        self.state = "scanning"
        started = time.monotonic()
        last = [0.0]

        def progress() -> None:
            now = time.monotonic()
            if waiters and ing.backlog is not None and now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                for reply in waiters:
                    reply(Progress(backlog=ing.backlog))

        totals: Totals = ing.rescan(progress)
        self.scans += 1
        self.last_sync_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.state = "watching"
        seconds = time.monotonic() - started
        if totals.files_changed:
            log.info("rescan: %d files, %d changed, %d lines, %d bad lines in %.2f s", totals.files_scanned,
                     totals.files_changed, totals.lines, totals.errors, seconds)
        for reply in waiters:
            reply(SyncReply(files_scanned=totals.files_scanned, files_changed=totals.files_changed,
                            lines_ingested=totals.lines, errors=totals.errors, seconds=round(seconds, 3)))

"""csmd's parts, wired together, and its life from lock to exit.

Threads: the main thread runs the control socket; one ingest thread owns the only
writer connection; watchdog's observer threads only hint; a small pool runs
read-only queries. Shutdown (SIGTERM/SIGINT) stops the socket loop, lets the ingest
thread commit the batch in hand, and closes everything in reverse order.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from csm.daemon import export, queries, reports
from csm.daemon.ingest import Ingestor
from csm.daemon.lock import InstanceLock
from csm.daemon.notify import Notifier
from csm.daemon.server import Reply, Server
from csm.daemon.store import Store, figures, open_reader, open_writer
from csm.daemon.prices import PriceTable
from csm.daemon.syncer import Syncer
from csm.daemon.usage import UsageSink
from csm.daemon.watcher import Watcher
from csm.shared import __version__, paths
from csm.shared.config import Config
from csm.shared.errors import NotFound, QueryError
from csm.shared.protocol import (
    Error, Export, ListErrors, Message, Ok, Query, Request, Status, StatusReply, Sync, UsageReport,
)

log = logging.getLogger("csm.daemon")


class Daemon:
    def __init__(self, config: Config, db: Path, roots: list[Path], sock: Path) -> None:
        self.config = config
        self.db = db
        self.roots = roots
        self.sock = sock
        self.started = time.monotonic()
        self.local = threading.local()
        self.notifier = Notifier()
        self.next_ping = 0.0

    def run(self) -> int:
        lock = InstanceLock(paths.lock_path(self.db))
        lock.acquire()
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> int:
        store = Store(open_writer(self.db))
        own = [self.db, self.db.with_name(self.db.name + "-wal"), self.db.with_name(self.db.name + "-shm")]
        self.ingestor = Ingestor(store, self.roots, self.config, exclude=own)
        self.prices = PriceTable.shipped()
        usage = UsageSink(self.prices)
        usage.prepare(store)
        self.ingestor.sinks.append(usage)
        self.syncer = Syncer(self.ingestor, self.config.rescan_interval_s)
        self.watcher = Watcher(self.roots, self.syncer, self.config.watch, self.config.poll_interval_s)
        self.syncer.before_rescan.append(self.watcher.check)
        self.reader = open_reader(self.db)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="csm-query")
        self.server = Server(self.sock)
        self.server.bind()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(self.server.wake_w, warn_on_full_buffer=False)
        log.info("csmd %s (pid %d): database %s, roots %s, socket %s", __version__, os.getpid(), self.db,
                 ", ".join(map(str, self.roots)), self.sock)
        self.watcher.start()
        self.syncer.start()  # its first job is the initial scan
        self.notifier.ready()
        tick = self._watchdog_tick if self.notifier.watchdog_interval_s else None
        try:
            self.server.serve(self.dispatch, tick)
        finally:
            log.info("stopping")
            self.notifier.stopping()
            self.watcher.stop()
            self.syncer.stop()
            self.syncer.join()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.server.close()
            self.reader.close()
            store.close()
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.server.stop()

    def _watchdog_tick(self) -> float:
        """Ping systemd's watchdog from the main loop, while the ingest thread lives.

        A hung main loop or a dead ingest thread stops the pings, and systemd restarts
        csmd. Set only under ``WatchdogSec=``, so an unsupervised csmd never wakes idly.
        """
        interval = self.notifier.watchdog_interval_s
        assert interval is not None
        now = time.monotonic()
        if now >= self.next_ping:
            if self.syncer.is_alive():
                self.notifier.watchdog()
            self.next_ping = now + interval
        return self.next_ping - now

    # --- requests ------------------------------------------------------------------

    def dispatch(self, request: Request, reply: Reply) -> None:
        match request:
            case Status():
                reply(self.status())
            case Sync(wait=True):
                self.syncer.request_sync(reply)
            case Sync():
                self.syncer.request_sync(lambda msg: None)
                reply(Ok(message="sync requested"))
            case Query(sql=sql, params=params, max_rows=max_rows):
                self.pool.submit(self._answer, reply, lambda conn: queries.run_sql(conn, sql, params, max_rows))
            case UsageReport():
                self.pool.submit(self._answer, reply, lambda conn: reports.usage(conn, request, self.prices.updated))
            case ListErrors(max_rows=max_rows):
                self.pool.submit(self._answer, reply, lambda conn: queries.list_errors(conn, max_rows))
            case Export():
                self.pool.submit(self._answer, reply, lambda conn: export.run(conn, request, reply))

    def status(self) -> StatusReply:
        f = figures(self.reader)
        backlog = self.syncer.backlog
        state = self.syncer.state
        if backlog is not None and state == "scanning" and self.syncer.scans == 0:
            state = "initial sync"
        return StatusReply(
            version=__version__,
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - self.started, 3),
            state=state,
            db_path=str(self.db),
            roots=[str(r) for r in self.roots],
            files=f["files"],
            files_gone=f["files_gone"],
            events=self.ingestor.events,
            sessions=f["sessions"],
            sessions_gone=f["sessions_gone"],
            errors=f["errors"],
            last_sync_at=self.syncer.last_sync_at,
            watch_mode=self.watcher.mode,
            backlog=backlog,
            last_error=self.syncer.last_error,
        )

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = queries.open_query_connection(self.db)
        return conn

    def _answer(self, reply: Reply, work: Callable[[sqlite3.Connection], Message]) -> None:
        """Run a read-only ``work`` on this pool thread's connection and reply with its result."""
        try:
            reply(work(self._connection()))
        except QueryError as e:
            reply(Error(code="query", message=str(e)))
        except NotFound as e:
            reply(Error(code="not_found", message=str(e)))
        except Exception as e:
            log.exception("query failed")
            reply(Error(code="internal", message=f"{type(e).__name__}: {e}"))

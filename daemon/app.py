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

import msgspec

from csm.daemon import browse, export, heap, queries, reports, search, space, turns
from csm.daemon.checkpoint import Checkpointer
from csm.daemon.compress import Compressor
from csm.daemon.diagnose import diagnose
from csm.daemon.health import Health
from csm.daemon.ingest import Ingestor
from csm.daemon.lock import InstanceLock
from csm.daemon.notify import Notifier
from csm.daemon.server import Replier, Reply, Server
from csm.daemon.prices import PriceTable
from csm.daemon.retention import Retention
from csm.daemon.store import Store, figures, open_reader, open_writer
from csm.daemon.syncer import Syncer
from csm.daemon.usage import UsageSink
from csm.daemon.watch import Watchers
from csm.daemon.watcher import Watcher
from csm.shared import __version__, paths
from csm.shared import config as config_mod
from csm.shared.config import Resolved
from csm.shared.errors import ConfigError, NotFound, QueryError
from csm.shared.protocol import (
    Ack,
    ConfigReply,
    Error,
    Export,
    Fault,
    GetConfig,
    ListErrors,
    Message,
    Ok,
    Query,
    ReloadConfig,
    Request,
    Search,
    Sessions,
    Show,
    Status,
    StatusReply,
    Sync,
    TeamResync,
    TeamStatus,
    TeamStatusReply,
    UsageReport,
    Watch,
)

log = logging.getLogger("csm.daemon")


class Daemon:
    def __init__(self, settings: Resolved, sock: Path) -> None:
        self.settings = settings
        self.config = settings.config
        self.db = settings.db()
        self.roots = settings.roots()
        self.sock = sock
        self.started = time.monotonic()
        self.local = threading.local()
        self.notifier = Notifier()
        self.next_ping = 0.0
        self.figures = {"files": 0, "files_gone": 0, "sessions": 0, "sessions_gone": 0, "errors": 0}
        """The last counts read for ``csm status``, shown while the database cannot be read."""

    def run(self) -> int:
        lock = InstanceLock(paths.lock_path(self.db))
        lock.acquire()
        try:
            return self._run()
        except sqlite3.Error as e:  # damage past the header, a full disk, a lock, while loading the checkpoints
            raise diagnose(self.db, e, "cannot use database") from None
        finally:
            lock.release()

    def _run(self) -> int:
        store = Store(open_writer(self.db))
        own = paths.own_files(self.db)
        self.ingestor = Ingestor(store, self.roots, self.config, exclude=own,
                                 heap_cap=heap.SqliteCap(store.conn, self.config.query_max_bytes))
        self.prices = PriceTable.shipped()
        usage = UsageSink(self.prices)
        usage.prepare(store)
        self.ingestor.sinks.append(usage)
        self.checkpointer = Checkpointer(self.db, store.conn)
        self.ingestor.on_commit.append(self.checkpointer.committed)
        self.syncer = Syncer(self.ingestor, self.config.rescan_interval_s, db=self.db)
        self.health = Health(self.db, self.config.check_interval_s)
        self.syncer.before_rescan.append(self.health.problem)
        self.watcher = Watcher(self.roots, self.syncer, enabled=self.config.watch,
                               poll_interval_s=self.config.poll_interval_s, own=own)
        self.syncer.before_rescan.append(self.watcher.check)
        self.syncer.after_new_dirs.append(self.watcher.verify)
        threading.excepthook = self._thread_died
        ing = self.ingestor
        self.search_index = search.SearchIndex(defer_tools=self._large_backlog)
        ing.sinks.append(self.search_index)
        self.syncer.before_rescan.append(lambda: self.search_index.backfill(store, ing.stopping))
        self.syncer.after_work.append(
            lambda: self.search_index.catch_up(store, lambda: ing.stopping.is_set() or self.syncer.busy()))
        self.retention = Retention(self.roots)
        self.syncer.after_work.append(lambda: self.retention.check(store.conn, rescanned=self.syncer.scans > 0))
        compressor = Compressor(store, self.config.compress_after_days, ing.stopping)
        self.syncer.after_work.append(lambda: compressor.run(
            lambda: ing.stopping.is_set() or self.syncer.busy(), self.checkpointer.wrote))
        self.syncer.after_work.append(lambda: space.give_back(
            store, lambda: ing.stopping.is_set() or self.syncer.busy(), self.checkpointer.wrote))
        self.reader = open_reader(self.db)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="csm-query",
                                       initializer=turns.on_query_thread, initargs=(self.syncer.turns.give_way,))
        self.query_slots = threading.BoundedSemaphore(self.config.query_queue)
        self.server = Server(self.sock)
        self.server.bind()
        self.watchers = Watchers(self.server)
        self.exports = export.Exports(self.server)
        self.ingestor.on_commit.append(self.watchers.on_commit)
        self.mirror = None
        if self.config.team is not None:  # imported only in team mode: csmd without it never loads psycopg
            from csm.team.mirror import Mirror

            self.mirror = Mirror(self.db, self.config.team)
            self.ingestor.on_commit.append(self.mirror.committed)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(self.server.wake_w, warn_on_full_buffer=False)
        log.info("csmd %s (pid %d): database %s, roots %s, socket %s", __version__, os.getpid(), self.db,
                 ", ".join(map(str, self.roots)), self.sock)
        self.checkpointer.start()
        self.health.start()
        self.watcher.start()
        self.syncer.start()  # its first job is the initial scan
        if self.mirror is not None:
            self.mirror.start()
        self.notifier.ready()
        try:
            self.server.serve(self.dispatch, self._tick)
        finally:
            log.info("stopping")
            self.notifier.stopping()
            self.syncer.stop()
            self.syncer.join()
            if self.mirror is not None:
                self.mirror.stop()
                self.mirror.join(15)
            self.watcher.stop()
            self.health.stop()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.server.close()
            self.reader.close()
            self.checkpointer.stop()
            store.close()
        return 0

    def _large_backlog(self) -> bool:
        """A rescan with much to read (an initial sync): the search index leaves tool text for after it."""
        backlog = self.ingestor.backlog
        return backlog is not None and backlog.bytes_total >= self.config.search_defer_tools_bytes

    def _on_signal(self, signum: int, frame: object) -> None:
        self.watchers.stop()
        self.exports.stop()
        self.server.stop()

    def _tick(self) -> float | None:
        """The main loop's timers: systemd's watchdog (when supervised) and the watch heartbeats."""
        waits = [self.watchers.tick()]
        if self.notifier.watchdog_interval_s:
            waits.append(self._watchdog_tick())
        return min((w for w in waits if w is not None), default=None)

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

    def _thread_died(self, args: threading.ExceptHookArgs) -> None:
        """A thread ended with an exception (watchdog's do when a handler raises): log it, check at once."""
        name = args.thread.name if args.thread else "?"
        log.error("thread %s died: %s: %s", name, args.exc_type.__name__, args.exc_value,
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]
        self.syncer.request_rescan()  # the check before the rescan restarts what died

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
                cfg = self.config
                self._submit(reply, lambda conn: queries.run_sql(
                    conn, sql, params, min(max_rows, cfg.query_max_rows), cfg.query_time_limit_s, cfg.query_max_bytes))
            case UsageReport():
                self._submit(reply, lambda conn: reports.usage(conn, request, self.prices.updated), own=True)
            case GetConfig():
                s = self.settings
                reply(ConfigReply(pid=os.getpid(), config_file=s.file, config_file_exists=s.file_exists,
                                  config_file_source=s.file_source, settings=s.sources))
            case Fault():
                if os.environ.get("CSM_TEST_HOOKS") != "1":
                    reply(Error(code="bad_request", message="faults are for tests: start csmd with CSM_TEST_HOOKS=1"))
                    return
                try:
                    reply(Ok(message=self.watcher.fault(request.action)))
                except ValueError as e:
                    reply(Error(code="bad_request", message=str(e)))
            case Sessions():
                self._submit(reply, lambda conn: browse.sessions(conn, request), own=True)
            case Show():
                self._submit(reply, lambda conn: browse.show(conn, request), own=True)
            case Search():
                self._submit(reply, lambda conn: search.search(conn, request), own=True)
            case Watch():
                self._submit(reply, lambda conn: self._watch(conn, request, reply), own=True)
            case ListErrors(max_rows=max_rows):
                self._submit(reply, lambda conn: queries.list_errors(conn, max_rows), own=True)
            case Export():
                assert isinstance(reply, Replier)
                self._submit(reply, lambda conn: self.exports.run(conn, request, reply), own=True, alone=True)
            case Ack(seq=seq):
                assert isinstance(reply, Replier)
                self.exports.ack(reply.envelope, seq)
                self.watchers.ack(reply.envelope, seq)
            case ReloadConfig():
                reply(self.reload_config())
            case TeamStatus() | TeamResync() if self.mirror is None:
                reply(TeamStatusReply(configured=False))
            case TeamStatus():
                self._submit(reply, self.mirror.status, own=True)
            case TeamResync():
                self.mirror.resync()
                reply(Ok(message="the whole history will be sent again"))

    def reload_config(self) -> Message:
        """Apply a changed config file without a restart (the web settings page, ``csm config set``).

        The roots list is shared by the ingestor and the watcher, so it changes in place; the
        rescan that follows watches new roots and reads them. A bad file changes nothing.
        """
        try:
            new = config_mod.reload(self.settings)
        except ConfigError as e:
            return Error(code="config", message=str(e))
        old, cfg = self.config, new.config
        changed = [k for k in config_mod.KEYS if getattr(old, k) != getattr(cfg, k)]
        self.settings, self.config = new, msgspec.structs.replace(old, **{k: getattr(cfg, k) for k in config_mod.LIVE})
        self.roots[:] = new.roots()
        self.syncer.rescan_interval_s = cfg.rescan_interval_s
        self.watcher.poll_interval_s = cfg.poll_interval_s
        if self.syncer.poll_s is not None:
            self.syncer.poll_s = cfg.poll_interval_s
        logging.getLogger().setLevel(cfg.log_level.upper())
        self.syncer.request_rescan()
        applied = [k for k in changed if k in config_mod.LIVE]
        later = [k for k in changed if k not in config_mod.LIVE]
        log.info("config reloaded from %s: applied %s", new.file, ", ".join(applied) or "nothing new")
        return Ok(message=f"applied: {', '.join(applied) or 'nothing changed'}"
                          + (f"; after a restart of csmd: {', '.join(later)}" if later else ""))

    def status(self) -> StatusReply:
        db_problem = self.health.problem()
        try:
            f = self.figures = figures(self.reader)
        except sqlite3.Error as e:  # the file deleted or damaged under csmd: the last figures, and why
            f = self.figures
            db_problem = db_problem or f"cannot read {self.db}: {e}"
        days, days_from = self.retention.period()
        state = self.syncer.state
        if state == "idle":
            state = "watching" if self.watcher.mode == "watching" else "polling"
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
            line_errors=f["line_errors"],
            last_sync_at=self.syncer.last_sync_at,
            watch_mode=self.watcher.mode,
            watcher_restarts=self.watcher.restarts,
            backlog=self.syncer.backlog,
            last_error=self.syncer.last_error or self._stuck(),
            db_problem=db_problem,
            db_checked_at=self.health.checked_at,
            cleanup_period_days=days,
            cleanup_period_source=days_from,
            lost_before_csm=self.retention.lost,
        )

    def _stuck(self) -> str | None:
        stuck = dict(self.ingestor.stuck)  # a copy: the ingest thread may change it meanwhile
        if not stuck:
            return None
        path, error = next(iter(stuck.items()))
        more = f" (and {len(stuck) - 1} more files)" if len(stuck) > 1 else ""
        return f"cannot ingest {path}{more}: {error}; see the log"

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = queries.open_query_connection(self.db, self.config.query_max_bytes)
        return conn

    def _own_connection(self) -> sqlite3.Connection:
        """A read-only connection without the authorizer, for csm's own SQL: the authorizer
        refuses what opening an FTS5 table does (``sqlite3_declare_vtab``), which csm's search needs."""
        conn = getattr(self.local, "own", None)
        if conn is None:
            conn = self.local.own = open_reader(self.db)
        return conn

    def _submit(self, reply: Reply, work: Callable[[sqlite3.Connection], Message | None], own: bool = False,
                alone: bool = False) -> None:
        """Queue read-only ``work`` for the pool; a bounded queue, so a flood of slow queries gets
        "busy" at once instead of hours of backlog and memory. ``alone``: work that waits for its
        client (an export) gets a thread (and connection) of its own instead of a pool thread."""
        if not self.query_slots.acquire(blocking=False):
            reply(Error(code="busy", message=f"csmd is busy: {self.config.query_queue} queries are "
                                             "running or waiting; try again when they finish"))
            return
        if alone:
            threading.Thread(target=self._answer, args=(reply, work, own), name="csm-export", daemon=True).start()
        else:
            self.pool.submit(self._answer, reply, work, own)

    def _answer(self, reply: Reply, work: Callable[[sqlite3.Connection], Message | None], own: bool = False) -> None:
        """Run a read-only ``work`` on this pool thread's connection and reply with its result (if any).

        ``own``: csm's own SQL, on a connection without the authorizer (see ``_own_connection``).
        """
        try:
            turns.give_way()  # a query does not start while fresh lines wait for their turn
            result = work(self._own_connection() if own else self._connection())
            if result is not None:
                reply(result)
        except NotFound as e:
            reply(Error(code="not_found", message=str(e)))
        except QueryError as e:
            reply(Error(code="query", message=str(e)))
        except Exception as e:
            log.exception("query failed")
            reply(Error(code="internal", message=f"{type(e).__name__}: {e}"))
        finally:
            self.query_slots.release()

    def _watch(self, conn: sqlite3.Connection, request: Watch, reply: Reply) -> None:
        """Subscribe this client (a session prefix is resolved once, here)."""
        assert isinstance(reply, Replier)
        session = browse.place(conn, browse.resolve(conn, request.session)) if request.session else None
        self.watchers.add(reply.envelope, session, request.project)

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
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec

from csm.daemon import attach, browse, export, heap, queries, reports, search, space, turns
from csm.daemon.archive import Archiver
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
from csm.daemon.sinks import OnCommit
from csm.daemon.store import Store, figures, open_reader, open_writer
from csm.daemon.syncer import Syncer
from csm.daemon.usage import UsageSink
from csm.daemon.watch import Watchers
from csm.daemon.watcher import Watcher
from csm.shared import __version__, paths, timespec
from csm.shared import config as config_mod
from csm.shared.config import Config, Resolved
from csm.shared.errors import BadRequest, Busy, ConfigError, CsmError, DaemonError
from csm.shared.protocol import (
    Ack,
    Archive,
    ArchiveList,
    ArchiveReply,
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
        ing = self.ingestor
        self.prices = PriceTable.shipped()
        query_turns = turns.Turns()
        self.checkpointer = Checkpointer(self.db, store.conn, query_turns)
        self.search_index = search.SearchIndex(defer=self._large_backlog, stopping=ing.stopping,
                                               wrote=self.checkpointer.wrote)
        ing.sinks += [UsageSink(self.prices), self.search_index, self.checkpointer]
        self.syncer = Syncer(self.ingestor, self.config.rescan_interval_s, db=self.db, turns=query_turns)
        self.health = Health(self.db, self.config.check_interval_s)
        self.syncer.before_rescan.append(self.health.problem)
        self.watcher = Watcher(ing.tree, self.syncer, enabled=self.config.watch,
                               poll_interval_s=self.config.poll_interval_s)
        self.syncer.before_rescan.append(self.watcher.check)
        self.syncer.after_new_dirs.append(self.watcher.verify)
        threading.excepthook = self._thread_died
        self.retention = Retention(self.roots, rescanned=lambda: self.syncer.scans > 0)
        compressor = Compressor(store, self.config.compress_after_days, self.checkpointer.wrote)
        self.archiver = Archiver(store, self.db, self.checkpointer.wrote, team=self.config.team is not None,
                                 listing=lambda: self._own_answer(self.archive_list))
        self.archiver.recover()  # before any reader attaches an archive
        ing.events += attach.figures(store.conn)[1]
        ing.sinks += [self.retention, self.archiver, compressor, space.Space(self.checkpointer.wrote)]
        self.reader = open_reader(self.db)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="csm-query",
                                       initializer=turns.on_query_thread, initargs=(self.syncer.turns.give_way,))
        self.query_slots = threading.BoundedSemaphore(self.config.query_queue)
        self.server = Server(self.sock)
        self.server.bind()
        heap.TRIM.wake = self.server.wake
        self.watchers = Watchers(self.server)
        self.exports = export.Exports(self.server)
        ing.sinks.append(self.watchers)
        self.mirror = None
        if self.config.team is not None:  # imported only in team mode: csmd without it never loads psycopg
            from csm.team.mirror import Mirror

            self.mirror = Mirror(self.db, self.config.team)
            ing.sinks.append(OnCommit("team mirror", self.mirror.committed))
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
            self.archiver.abandon()
            if self.mirror is not None:
                self.mirror.stop()
                self.mirror.join(15)
            self.watcher.stop()
            self.health.stop()
            self.pool.shutdown(wait=True, cancel_futures=True)
            heap.TRIM.wake = None  # its pipe closes with the server
            self.server.close()
            self.reader.close()
            self.checkpointer.stop()
            store.close()
        return 0

    def _large_backlog(self) -> bool:
        """A rescan with much to read (an initial sync): the search index is built just after its rows.
        Hints stored meanwhile (``Ingestor.live``) are live lines, indexed with their rows."""
        backlog = self.ingestor.backlog
        return (backlog is not None and not self.ingestor.live
                and backlog.bytes_total >= self.config.search_defer_tools_bytes)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.watchers.stop()
        self.exports.stop()
        self.server.stop()

    def _tick(self) -> float | None:
        """The main loop's timers: systemd's watchdog (when supervised) and the watch heartbeats."""
        waits = [self.watchers.tick(), heap.TRIM.tick()]
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
        """Answer ``request`` where its route says (``ROUTES``)."""
        route = STREAMED_SHOW if isinstance(request, Show) and request.limit is None else ROUTES[type(request)]
        if route.where in ("pool", "thread"):
            self._submit(route, request, reply)
            return
        result = route.run(self, request, reply, None)  # inline, or handing work to the ingest thread
        if result is not None:
            reply(result)

    def sync(self, request: Sync, reply: Reply, conn: None) -> Message | None:
        """Hand a sync to the ingest thread: it answers when done (``wait``), or at once that it will."""
        self.syncer.request_sync(reply if request.wait else lambda msg: None)
        return None if request.wait else Ok(message="sync requested")

    def archive(self, request: Archive, reply: Reply, conn: None) -> Message | None:
        """Hand a move to the ingest thread (the one writer), woken by a rescan; it answers when done."""
        try:
            timespec.from_wire(request.before)
        except ValueError as e:
            return Error.of(BadRequest(str(e)))
        self.archiver.request(request.before, reply)
        self.syncer.request_rescan()
        return None

    def archive_list(self, request: ArchiveList | None, reply: Reply | None, conn: sqlite3.Connection) -> ArchiveReply:
        return ArchiveReply(archives=attach.listing(conn))

    def _own_answer(self, run: Callable[[Any, Any, sqlite3.Connection], ArchiveReply]) -> ArchiveReply:
        """Run a read on this thread's own reader (the ingest thread's, for the archives after a move)."""
        conn = self._own_connection()
        attach.refresh(conn)
        return run(None, None, conn)

    def config_reply(self, request: GetConfig, reply: Reply, conn: None) -> ConfigReply:
        s = self.settings
        return ConfigReply(pid=os.getpid(), config_file=s.file, config_file_exists=s.file_exists,
                           config_file_source=s.file_source, settings=s.sources)

    def fault(self, request: Fault, reply: Reply, conn: None) -> Message:
        if os.environ.get("CSM_TEST_HOOKS") != "1":
            return Error.of(BadRequest("faults are for tests: start csmd with CSM_TEST_HOOKS=1"))
        try:
            return Ok(message=self.watcher.fault(request.action))
        except ValueError as e:
            return Error.of(BadRequest(str(e)))

    def ack(self, request: Ack, reply: Reply, conn: None) -> None:
        """A client printed or wrote what it was sent up to ``seq`` (an export, a watch)."""
        assert isinstance(reply, Replier)
        self.exports.ack(reply.envelope, request.seq)
        self.watchers.ack(reply.envelope, request.seq)

    def team_resync(self, request: TeamResync, reply: Reply, conn: None) -> Message:
        if self.mirror is None:
            return TeamStatusReply(configured=False)
        self.mirror.resync()
        return Ok(message="the whole history will be sent again")

    def team_status(self, request: TeamStatus, reply: Reply, conn: sqlite3.Connection) -> Message:
        return TeamStatusReply(configured=False) if self.mirror is None else self.mirror.status(conn)

    def reload_config(self) -> Message:
        """Apply a changed config file without a restart (the web settings page, ``csm config set``).

        The roots list is shared by the ingestor and the watcher, so it changes in place; the
        rescan that follows watches new roots and reads them. A bad file changes nothing.
        """
        try:
            new = config_mod.reload(self.settings)
        except ConfigError as e:
            return Error.of(e)
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
            attach.refresh(self.reader)
            f = self.figures = figures(self.reader)
            f["archived_sessions"], f["archived_lines"] = attach.figures(self.reader)
            db_problem = db_problem or attach.problem(self.reader)
        except sqlite3.Error as e:  # the file deleted or damaged under csmd: the last figures, and why
            f = self.figures
            db_problem = db_problem or f"cannot read {self.db}: {e}"
        finally:
            _forget_pages(self.reader)
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
            archived_sessions=f.get("archived_sessions", 0),
            archived_lines=f.get("archived_lines", 0),
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
            commits=self.ingestor.store.commits,
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

    def _submit(self, route: Route, request: Request, reply: Reply) -> None:
        """Queue a read-only request for the pool; a bounded queue, so a flood of slow queries gets
        "busy" at once instead of hours of backlog and memory. Work that waits for its client (an
        export, ``where="thread"``) gets a thread (and connection) of its own instead of a pool thread."""
        if not self.query_slots.acquire(blocking=False):
            reply(Error.of(Busy(f"csmd is busy: {self.config.query_queue} queries are running or waiting; "
                                "try again when they finish")))
            return
        if route.where == "thread":
            threading.Thread(target=self._answer, args=(route, request, reply), name="csm-export", daemon=True).start()
        else:
            self.pool.submit(self._answer, route, request, reply)

    def _answer(self, route: Route, request: Request, reply: Reply) -> None:
        """Answer a read-only request (``_respond``), then give back what it used: its thread's readers'
        page caches, and (soon) the heap its reply took, once the reply is freed."""
        try:
            self._respond(route, request, reply)
        finally:
            self.query_slots.release()
            for conn in (getattr(self.local, "conn", None), getattr(self.local, "own", None)):
                _forget_pages(conn)
            heap.TRIM.soon()

    def _respond(self, route: Route, request: Request, reply: Reply) -> None:
        """Run a read-only request on this pool thread's connection, under its route's time limit, and
        reply with its result (if any). A user's SQL gets the connection with the authorizer
        (``_connection``); csm's own, one without it (``_own_connection``)."""
        try:
            turns.give_way()  # a query does not start while fresh lines wait for their turn
            conn = self._connection() if route.users_sql else self._own_connection()
            limit = route.limit(self.config) if route.limit else None
            with self.syncer.turns.reading():
                attach.refresh(conn)  # archives added or changed since this connection last looked
                with queries.time_limit(conn, *limit) if limit else nullcontext():
                    result = route.run(self, request, reply, conn)
            if result is not None:
                reply(result)
        except CsmError as e:
            reply(Error.of(e))
        except Exception as e:
            log.exception("query failed")
            reply(Error.of(DaemonError(f"{type(e).__name__}: {e}")))

    def _watch(self, request: Watch, reply: Reply, conn: sqlite3.Connection) -> None:
        """Subscribe this client (a session prefix is resolved once, here)."""
        assert isinstance(reply, Replier)
        session = browse.place(conn, browse.resolve(conn, request.session)) if request.session else None
        self.watchers.subscribe(reply.envelope, session, request.project)


def _forget_pages(conn: sqlite3.Connection | None) -> None:
    """Empty a reader's page cache once its request is answered (``PRAGMA shrink_memory``).

    Each reader caches up to ``store.READER_CACHE_KB`` of pages; six of them (status, two per query
    thread, an export) kept 3 MB of csmd's heap filled after a burst of queries, for good. Reading the
    pages again from the OS's cache costs nothing measurable (1 GB archive, a query's CPU time with
    and without: usage 8.44/8.38 ms, sessions 8.51/8.56, search 5.65/5.64, status 0.93/0.92), as a 32-page
    cache is churned within a query anyway."""
    if conn is not None:
        try:
            conn.execute("PRAGMA shrink_memory")
        except sqlite3.Error:
            pass  # a damaged or vanished database: the request's own error is what matters


Where = Literal["inline", "ingest", "pool", "thread"]
Limit = Callable[[Config], tuple[float, str]]
"""A time limit and the advice its error gives, from the settings."""


class Route(NamedTuple):
    """Where a request runs and under which time limit.

    ``inline``: on the socket's thread, answered at once (it must never wait on the database);
    ``ingest``: handed to the ingest thread, which answers when its work is done; ``pool``: a
    read-only query on a pool thread's connection, ``users_sql`` the one with the authorizer;
    ``thread``: read-only work that waits for its client (an export under flow control), on a thread
    and connection of its own, so it never holds a pool thread.
    ``limit``: stops the request's statements past it; None for streams, which end with their client.
    """

    where: Where
    run: Callable[[Daemon, Any, Reply, Any], Message | None]
    limit: Limit | None = None
    users_sql: bool = False


REPORT_LIMIT_S = 10.0


def _report(config: Config) -> tuple[float, str]:
    return REPORT_LIMIT_S, "ask for less"


def _users_sql(config: Config) -> tuple[float, str]:
    return config.query_time_limit_s, "query_time_limit_s in csmd's config"


ROUTES: dict[type[Request], Route] = {
    Status: Route("inline", lambda d, req, reply, conn: d.status()),
    GetConfig: Route("inline", Daemon.config_reply),
    Fault: Route("inline", Daemon.fault),
    ReloadConfig: Route("inline", lambda d, req, reply, conn: d.reload_config()),
    Sync: Route("ingest", Daemon.sync),
    Query: Route("pool", lambda d, req, reply, conn: queries.run_sql(
        conn, req.sql, req.params, min(req.max_rows, d.config.query_max_rows), d.config.query_max_bytes),
        _users_sql, users_sql=True),
    UsageReport: Route("pool", lambda d, req, reply, conn: reports.usage(conn, req, d.prices.updated), _report),
    Sessions: Route("pool", lambda d, req, reply, conn: browse.sessions(conn, req), _report),
    Show: Route("pool", lambda d, req, reply, conn: browse.show(conn, req), _report),
    Search: Route("pool", lambda d, req, reply, conn: search.search(conn, req), _report),
    ListErrors: Route("pool", lambda d, req, reply, conn: queries.list_errors(conn, req.max_rows), _report),
    Watch: Route("pool", Daemon._watch, _report),
    Export: Route("thread", lambda d, req, reply, conn: d.exports.run(conn, req, reply)),
    Ack: Route("inline", Daemon.ack),
    TeamStatus: Route("pool", Daemon.team_status, _report),
    TeamResync: Route("inline", Daemon.team_resync),
    Archive: Route("ingest", Daemon.archive),
    ArchiveList: Route("pool", Daemon.archive_list, _report),
}
STREAMED_SHOW = Route("thread", lambda d, req, reply, conn: d.exports.serve(
    reply, lambda flow: browse.stream(conn, req, reply, flow), f"show of {req.session}"))
"""A whole conversation (a ``Show`` without a limit) streams under an export's flow control: it waits for
its client, so it has a thread of its own and no time limit."""

"""``csm archive --before DATE``: whole old sessions' lines moved into archive files, one per year.

Why: the archive only grows (it outlives Claude Code's cleanup), and years-old sessions are read
rarely. Their lines go to ``<db stem>-archive-<year><suffix>`` beside the main file (the year the
session ended), compressed (``daemon/compress.py``'s zstd and dictionaries), and the file is made
read-only (0400) between moves; readers attach them read-only and see main and archives as one
(``daemon/attach.py``). What queries hit first stays in the main file: checkpoints, session figures,
usage, the search index (its ids are the lines' ids, which never change).

Crash-safety, one session (file) at a time, with an explicit journal row:

1. main: ``archive_journal`` (file, archive) and ``archives.max_id`` raised to the file's last id
   (so the writer never gives an archived id out again); commit;
2. the archive: the file's rows copied (compressed), the dictionaries they need, the file's name; commit;
3. main: every row checked present in the archive, then deleted here, ``archived_files`` counted, the
   journal row deleted; commit.

A kill between 2 and 3 leaves the lines in both files: readers count an archive's row only where main
lacks it, and ``recover`` (on start) deletes those copies from the archive and the journal row, so a
move is undone whole; a kill in 1 or 2 leaves nothing to see. Every line is in exactly one place.

Runs as the ingest thread's idle work (the one writer), a session per step, stopping as soon as a hint
waits; the request is answered when all is moved. Sessions are left for later (``skipped``) while their
tool text waits to be indexed or, in team mode, while their lines are not mirrored yet: both read them
from the main file.

A resumed session (a file appended to after it was archived) keeps working: its checkpoint never left,
its new lines go to the main file, and export, show and search read both. A later ``csm archive`` moves
them into the same archive. Known limit: such a file read again from 0 (truncated or replaced) stores
its lines again here (the archived rows stay as an earlier generation), and a renamed archived file's
search text and usage keep the session id they had.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from csm.daemon.attach import COLUMNS
from csm.daemon.compress import LEVEL, MAX_LINE_BYTES
from csm.daemon.server import Reply
from csm.daemon.sinks import Sink
from csm.daemon.store import PAGE_SIZE, Store, now_iso
from csm.shared import timespec
from csm.shared.errors import CsmError, DaemonError, Unavailable
from csm.shared.paths import archive_path
from csm.shared.protocol import ArchiveReply, Backlog, Error, Progress

log = logging.getLogger("csm.archive")

SCHEMA = [
    f"PRAGMA arc.page_size = {PAGE_SIZE}",
    "CREATE TABLE IF NOT EXISTS arc.events (id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, "
    "generation INTEGER NOT NULL, line_offset INTEGER NOT NULL, session_id TEXT, uuid TEXT, parent_uuid TEXT, "
    "type TEXT, timestamp TEXT, raw TEXT NOT NULL, zraw BLOB, dict_id INTEGER)",
    "CREATE UNIQUE INDEX IF NOT EXISTS arc.events_position ON events(file_id, generation, line_offset)",
    "CREATE TABLE IF NOT EXISTS arc.raw_dictionaries (id INTEGER PRIMARY KEY, trained_at TEXT NOT NULL, "
    "lines INTEGER NOT NULL, dict BLOB NOT NULL)",
    # For a tool that opens an archive alone: which transcript each file_id was.
    "CREATE TABLE IF NOT EXISTS arc.files (file_id INTEGER PRIMARY KEY, file_path TEXT NOT NULL, "
    "project TEXT NOT NULL, session_id TEXT NOT NULL)",
]
"""An archive file's tables: ``events`` as in main (same ids), and what reads it without the main file."""

SEALED, WRITING = 0o400, 0o600
PROGRESS_EVERY_S = 1.0
"""The client hears at least this often while sessions move (``ARCHIVE_TIMEOUT_S`` in the CLI is the longest wait)."""


@dataclass
class Job:
    """One ``csm archive`` request, carried over idle steps until done."""

    before: str
    """The UTC wire instant: sessions whose last line and file are older move."""
    reply: Reply
    started: float = field(default_factory=time.monotonic)
    sessions: int = 0
    lines: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    told: float = 0.0
    """When the client was last sent the progress."""


class Archiver(Sink):
    """Moves sessions into archive files on the ingest thread (``request``, then ``idle``)."""

    name = "archive"

    def __init__(self, store: Store, db: Path, wrote: Callable[[int], None], team: bool,
                 listing: Callable[[], ArchiveReply]) -> None:
        self.store = store
        self.db = db
        self.wrote = wrote
        self.team = team
        self.listing = listing
        self.jobs: list[Job] = []
        self.lock = threading.Lock()
        self.attached: str | None = None
        self.moved = 0
        """Files moved since csmd started (for ``_test_kill``)."""

    def request(self, before: str, reply: Reply) -> None:
        """Queue a move (from the socket's thread); the ingest thread does it when idle."""
        with self.lock:
            self.jobs.append(Job(before, reply))

    def abandon(self) -> None:
        """csmd is stopping: the requests still waiting hear it now (what moved stays moved)."""
        with self.lock:
            jobs, self.jobs = self.jobs, []
        for job in jobs:
            job.reply(Error.of(Unavailable(f"csmd stopped after moving {job.sessions} sessions; run csm archive "
                                           "again once it is back")))

    def idle(self, store: Store, stop: Callable[[], bool]) -> None:
        try:
            while not stop():
                with self.lock:
                    job = self.jobs[0] if self.jobs else None
                if job is None:
                    return
                try:
                    if not self._run(job, stop):
                        return  # new work waits: the rest at the next idle step
                    reply: ArchiveReply | Error = self._done(job)
                except (sqlite3.Error, OSError, CsmError) as e:
                    log.error("archive: %s", e)
                    reply = Error.of(e if isinstance(e, CsmError) else Unavailable(
                        f"archive stopped after {job.sessions} sessions: {e}; what moved stays moved, the rest "
                        "stays in the main database; run it again"))
                except Exception as e:  # a bug: this request fails, the ingest thread goes on
                    log.exception("archive failed")
                    reply = Error.of(DaemonError(f"archive stopped: {type(e).__name__}: {e}"))
                with self.lock:
                    self.jobs.remove(job)
                job.reply(reply)
        finally:
            self._detach()

    def _done(self, job: Job) -> ArchiveReply:
        self._detach()
        listed = self.listing()
        why = ", ".join(f"{n} {what}" for what, n in job.skipped.items())
        log.info("archived %d sessions (%d lines) that ended before %s%s", job.sessions, job.lines, job.before,
                 f"; left for later: {why}" if why else "")
        return ArchiveReply(sessions=job.sessions, lines=job.lines, skipped=sum(job.skipped.values()),
                            skipped_why=why, seconds=round(time.monotonic() - job.started, 3),
                            archives=listed.archives)

    def _run(self, job: Job, stop: Callable[[], bool]) -> bool:
        """Move the job's sessions one at a time, telling the client how far it got (which also tells it
        csmd is alive); False when stopped for new work."""
        due = self._due(job)
        due_left = len(due)
        for file_id, name in due:
            if stop():
                return False
            job.lines += self._move(file_id, name)
            job.sessions += 1
            due_left -= 1
            if time.monotonic() - job.told >= PROGRESS_EVERY_S:
                job.told = time.monotonic()
                job.reply(Progress(backlog=Backlog(files_done=job.sessions, files_total=job.sessions + due_left)))
        return True

    def _due(self, job: Job) -> list[tuple[int, str]]:
        """(file, archive) of the sessions to move now: ended before the job's instant (last line and file),
        with lines in the main file; the ones that must wait are counted in ``job.skipped``."""
        q = self.store.conn.execute
        before_ns = int(timespec.from_wire(job.before).timestamp()) * 10**9
        backfill = q("SELECT COALESCE(max(pending_below), 0) FROM search_backfill").fetchone()[0]
        # Migration 13 rebuilds each archive's tool text below a mark: a line moved into it meanwhile would be
        # indexed twice.
        rebuilding = {r[0] for r in q("SELECT archive FROM search_tools_archived")}
        mirrored = q("SELECT position FROM team_mirror").fetchone()[0] if self.team else None
        due, skipped = [], job.skipped
        for file_id, name, low, high, pending, touched in q(
                "SELECT s.file_id, COALESCE(x.archive, CASE WHEN s.last_ts GLOB '[0-9][0-9][0-9][0-9]-*' "
                "THEN substr(s.last_ts, 1, 4) ELSE substr(m.last_modified, 1, 4) END), "
                "(SELECT min(id) FROM events e WHERE e.file_id = s.file_id), "
                "(SELECT max(id) FROM events e WHERE e.file_id = s.file_id), "
                "EXISTS (SELECT 1 FROM search_tools_pending p JOIN events e ON e.id = p.event_id "
                "        WHERE e.file_id = s.file_id), m.mtime_ns >= ? "
                "FROM session_stats s JOIN sync_metadata m ON m.file_id = s.file_id "
                "LEFT JOIN archived_files x ON x.file_id = s.file_id "
                "WHERE COALESCE(s.last_ts, m.last_modified) < ? "
                "AND s.file_id NOT IN (SELECT file_id FROM archive_journal) ORDER BY s.file_id",
                (before_ns, job.before)).fetchall():
            if low is None:
                continue  # nothing left in the main file
            if touched:  # a copied or restored file, or one written to since: said, so "moved 0" is explained
                skipped["whose transcript file changed after that date (they move once it is older)"] = skipped.get(
                    "whose transcript file changed after that date (they move once it is older)", 0) + 1
            elif pending or low < backfill or name in rebuilding:
                skipped["waiting for their tool text to be indexed (run it again once csmd is idle)"] = skipped.get(
                    "waiting for their tool text to be indexed (run it again once csmd is idle)", 0) + 1
            elif mirrored is not None and high > mirrored:
                skipped["not yet mirrored to the team database (run it again once the mirror caught up)"] = skipped.get(
                    "not yet mirrored to the team database (run it again once the mirror caught up)", 0) + 1
            else:
                due.append((file_id, name))
        return due

    def _move(self, file_id: int, name: str) -> int:
        """Steps 1-3 of the module's docstring for one file; the lines moved."""
        q = self.store.conn.execute
        self._attach(name)
        with self.store.transaction():
            lines, top = q("SELECT count(*), max(id) FROM main.events WHERE file_id = ?", (file_id,)).fetchone()
            q("INSERT INTO archive_journal VALUES (?, ?, ?)", (file_id, name, now_iso()))
            q("INSERT INTO archives VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET max_id = max(max_id, excluded.max_id)",
              (name, top))
        self._test_kill("journal")
        try:
            self._copy(file_id)
            self._test_kill("copied")
            lines = self._delete(file_id, name, lines)
            self._test_kill("deleted")
            self.moved += 1
            return lines
        except BaseException:
            self._undo(file_id, name)
            raise

    def _copy(self, file_id: int) -> None:
        """Step 2: the file's rows into the archive, compressed unless long, in one transaction of the archive."""
        q = self.store.conn.execute
        dict_id, zip_line = self._compressor()
        self.store.conn.create_function("csm_zip", 1, zip_line)
        plain = f"e.zraw IS NULL AND length(CAST(e.raw AS BLOB)) <= {MAX_LINE_BYTES}"
        q("BEGIN IMMEDIATE")
        try:
            # OR REPLACE: a stale copy of a row (an archive restored from a backup taken mid-move) gives way to
            # the main file's, which is the one readers count.
            q(f"INSERT OR REPLACE INTO arc.events ({COLUMNS}) SELECT e.id, e.file_id, e.generation, e.line_offset, e.session_id, "
              f"e.uuid, e.parent_uuid, e.type, e.timestamp, CASE WHEN {plain} THEN '' ELSE e.raw END, "
              f"CASE WHEN {plain} THEN csm_zip(CAST(e.raw AS BLOB)) ELSE e.zraw END, "
              f"CASE WHEN {plain} THEN ? ELSE e.dict_id END FROM main.events e WHERE e.file_id = ?", (dict_id, file_id))
            q("INSERT OR IGNORE INTO arc.raw_dictionaries SELECT * FROM main.raw_dictionaries "
              "WHERE id IN (SELECT dict_id FROM arc.events WHERE file_id = ?)", (file_id,))
            q("INSERT OR REPLACE INTO arc.files SELECT file_id, file_path, project, session_key FROM main.sync_metadata "
              "WHERE file_id = ?", (file_id,))
            self._test_kill("copying")
            q("COMMIT")
        except BaseException:
            if self.store.conn.in_transaction:
                q("ROLLBACK")
            raise

    def _delete(self, file_id: int, name: str, lines: int) -> int:
        """Step 3: the rows leave the main file once every one is in the archive; the move is recorded."""
        q = self.store.conn.execute
        with self.store.transaction():
            missing = q("SELECT count(*) FROM main.events e WHERE e.file_id = ? AND NOT EXISTS "
                        "(SELECT 1 FROM arc.events a WHERE a.id = e.id)", (file_id,)).fetchone()[0]
            if missing:
                raise DaemonError(f"{missing} lines of file {file_id} are not in {archive_path(self.db, name)} "
                                    "after copying them: they stay in the main database")
            q("DELETE FROM main.events WHERE file_id = ?", (file_id,))
            q("INSERT INTO archived_files VALUES (?, ?, ?, ?) ON CONFLICT(file_id) DO UPDATE SET "
              "lines = lines + excluded.lines, moved_at = excluded.moved_at", (file_id, name, lines, now_iso()))
            q("DELETE FROM archive_journal WHERE file_id = ?", (file_id,))
        self.wrote(16 + lines)  # the deleted rows' b-tree pages, roughly one per line at most
        return lines

    def _test_kill(self, point: str) -> None:
        """Tests only (``CSM_TEST_HOOKS=1``): SIGKILL csmd at ``point`` of the move of the n-th file, as
        ``CSM_TEST_ARCHIVE_KILL=point:n`` says (journal, copying, copied, deleted)."""
        want = os.environ.get("CSM_TEST_ARCHIVE_KILL")
        if want and os.environ.get("CSM_TEST_HOOKS") == "1" and want == f"{point}:{self.moved}":
            os.kill(os.getpid(), signal.SIGKILL)

    def _compressor(self) -> tuple[int | None, Callable[[bytes], bytes]]:
        """The newest dictionary's id and a function compressing a line with it (none yet: plain zstd)."""
        row = self.store.conn.execute("SELECT id, dict FROM raw_dictionaries ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None, zstandard.ZstdCompressor(level=LEVEL).compress
        return row[0], zstandard.ZstdCompressor(level=LEVEL, dict_data=zstandard.ZstdCompressionDict(row[1])).compress

    def _attach(self, name: str) -> None:
        """Open archive ``name`` for writing on the writer's connection as ``arc`` (made if new)."""
        if self.attached == name:
            return
        self._detach()
        path = archive_path(self.db, name)
        if path.exists():
            os.chmod(path, WRITING)
        self.store.conn.execute("ATTACH ? AS arc", (str(path),))
        self.attached = name
        for sql in SCHEMA:
            self.store.conn.execute(sql)

    def _detach(self) -> None:
        """Close the archive being written and make it read-only again."""
        if self.attached is None:
            return
        self.store.conn.execute("DETACH arc")
        os.chmod(archive_path(self.db, self.attached), SEALED)
        self.attached = None

    def recover(self) -> None:
        """Undo the moves a kill interrupted (``archive_journal``): the copies leave the archive, the lines
        stay in the main file. Run on start, before any reader attaches an archive; then seal every archive."""
        q = self.store.conn.execute
        for file_id, name in q("SELECT file_id, archive FROM archive_journal").fetchall():
            if self._undo(file_id, name):
                log.warning("undid the move of file %d into %s that was interrupted: its lines stay in %s",
                            file_id, archive_path(self.db, name), self.db)
        self._detach()
        for (name,) in q("SELECT name FROM archives").fetchall():
            path = archive_path(self.db, name)
            if path.exists():
                os.chmod(path, SEALED)

    def _undo(self, file_id: int, name: str) -> bool:
        """Delete from the archive the copies of this file's lines that the main file still holds, then its
        journal row; False (logged) when the archive cannot be written: the journal row stays for the next start."""
        q = self.store.conn.execute
        path = archive_path(self.db, name)
        try:
            if path.exists():
                self._attach(name)  # opening it read-write also rolls back a copy cut short
                with self.store.transaction():
                    q("DELETE FROM arc.events WHERE file_id = ? AND id IN "
                      "(SELECT id FROM main.events WHERE file_id = ?)", (file_id, file_id))
            with self.store.transaction():
                q("DELETE FROM archive_journal WHERE file_id = ?", (file_id,))
            return True
        except (sqlite3.Error, OSError) as e:
            log.error("cannot undo the move of file %d into %s: %s; its lines stay in %s, and csmd tries again at "
                      "its next start", file_id, path, e, self.db)
            return False

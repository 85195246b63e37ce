"""The ingest thread's work on one file: read what changed, and store rows and checkpoint together.

A visit asks ``identity`` which checkpoint the file continues (and whether it must be read again),
reads the complete lines after the checkpoint (``reader``), makes each batch of them with
``batch.collect`` (the one decode of each line), lets the sinks derive their data from the views,
and writes the batch with its checkpoint in one transaction (``Store.write_batch``; the files of a
round of watcher hints share one: ``visit_together``). A re-read (a
truncated or replaced file) re-attaches each unchanged line to its existing row instead of inserting
it again, so it adds nothing twice and loses nothing: lines that vanished from the file keep their
rows under the old generation.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable
from contextlib import nullcontext
from pathlib import Path

import msgspec

from csm.daemon import heap, reader
from csm.daemon.batch import ERROR_HEAD, Batch, BadLineRow, LineError, Reread, collect, error_text
from csm.daemon.identity import OPEN_FLAGS, Checkpoints, adopt
from csm.daemon.parse import BadLine, parse
from csm.daemon.rescan import Rescan, Totals
from csm.daemon.sinks import Sink
from csm.daemon.store import FileRow, Store, iso_mtime
from csm.daemon.tree import Tree
from csm.shared.config import Config
from csm.shared.protocol import Backlog

log = logging.getLogger("csm.ingest")

ROUND_S = 0.1
"""The longest the lines of a round of hints wait for their commit (``visit_together``); besides this,
a round commits once it holds ``batch_lines`` lines or ``ROUND_BYTES`` (at most ``batch_bytes``)."""
ROUND_BYTES = 256 << 10
"""Line bytes a round holds before it commits: its batches (with their views, for the hooks) and the
sinks' data wait for the commit, and at 1 MB that cost csmd 2-3 MB more at its peak under 20 clients
(47-49 MB against 45-46 MB); 256 KB is still ~400 lines of the soak's per commit, not 1-20."""

_TROUBLE = frozenset({
    sqlite3.SQLITE_PERM, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOLFS, sqlite3.SQLITE_AUTH, sqlite3.SQLITE_NOTADB,
})


def _database_trouble(e: Exception) -> bool:
    """An error of the database itself (locked, full, I/O, corrupt, read-only), not of what a batch
    holds: the syncer backs off and retries the batch whole. Anything else (a constraint, a value
    SQLite cannot bind or sum, "integer overflow", a bug) is the batch's, and is split down to its line."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _TROUBLE
    return isinstance(e, sqlite3.OperationalError) or type(e) is sqlite3.DatabaseError


class Ingestor:
    """Owns the writer connection; every method runs on the ingest thread."""

    def __init__(self, store: Store, roots: list[Path], config: Config, exclude: Iterable[Path] = (),
                 heap_cap: heap.SqliteCap | None = None) -> None:
        self.store = store
        self.heap_cap = heap_cap
        self.tree = Tree(roots, exclude)
        self.config = config
        self.checkpoints = Checkpoints(store, self.tree)
        self.have_prompt: set[int] = store.files_with_prompt()
        self.unreadable: set[int] = store.unreadable_files()
        self.events = store.count_events()
        self.next_event_id = store.max_event_id() + 1
        self.rescans = Rescan(self)
        self.sinks: list[Sink] = [self.rescans]
        self.prepared = False
        self.stopping = threading.Event()
        self.stuck: dict[str, str] = {}
        """Files whose last visit failed with an unexpected error (a bug), for ``csm status``."""
        self.skipped: set[str] = set()
        """Paths that cannot be stored (names that are not UTF-8), warned about once."""
        self.waiting: dict[int, tuple[tuple[int, int], float | None]] = {}
        """Files whose last bytes have no newline: (size, mtime) and since when csmd has seen them so
        (None: looked at, not a complete record); see ``final_lines``."""
        self.final_due: dict[int, tuple[int, int]] = {}
        """The file ``final_lines`` is visiting, and the (size, mtime) its final line may be stored at."""
        self.round: Round | None = None
        """The batches stored in the transaction ``visit_together`` holds open, not yet committed."""
        self.stale = False
        """A round was rolled back and memory could not be read again from the database yet."""
        self.live_first: Callable[[str | None], None] = lambda visiting: None
        """Called by a rescan between its files and between the batches of a file (with the file it is
        visiting): the syncer stores the lines of hinted files there, so a backlog never starves a live
        session (``Syncer.live_first``)."""
        self.live = False
        """Set while the syncer stores the lines of hints: they are live, never part of a backlog."""
        self.reading: set[int] = set()
        """Files being caught up; a hint served meanwhile (``live_first``) that turns out to be one of them
        (renamed while read) is left to that read, which goes on to the file's end."""

    @property
    def backlog(self) -> Backlog | None:
        """The rescan's backlog while one runs (``csm status``, the search sink's deferral)."""
        return self.rescans.backlog

    def prepare(self) -> None:
        """Each sink's ``prepare``, once, before the first rescan (see ``Sink``)."""
        if not self.prepared:
            for sink in self.sinks:
                sink.prepare(self.store)
            self.prepared = True

    def idle(self, stop: Callable[[], bool]) -> None:
        """Each sink's ``idle`` work, after a round of hints and rescans, until ``stop``."""
        for sink in self.sinks:
            if stop():
                return
            sink.idle(self.store, stop)

    def rescan(self, progress: Callable[[], None] | None = None, top: Path | None = None) -> Totals:
        return self.rescans.run(progress, top)

    def moved(self, src: str, dest: str) -> Totals:
        """A rename seen by the watcher. The destination is visited like any path (its identity finds
        the checkpoint, even if ``src`` was itself the end of an earlier rename); a move out of sight
        (``x.jsonl.bak``) takes the checkpoint along, so the file is the same one when it comes back."""
        if self.stale:
            self._reload()
        ids = self.checkpoints
        if not self.tree.is_transcript(dest):
            ids.moved_out_of_sight(src, dest)
        totals = self.visit(dest) if self.tree.is_transcript(dest) else Totals()
        g = ids.live.get(src)
        if g is not None and not os.path.lexists(src):
            ids.mark_gone(g)
        return totals

    def visit(self, path: str) -> Totals:
        """Bring one path's rows and checkpoint up to date with the file.

        A database error propagates (the syncer backs off and retries everything); any
        other failure is a bug confined to this file: it is logged, the file's checkpoint
        stays where it was, and the other files go on.
        """
        try:
            totals = self._visit(path)
        except sqlite3.Error:
            raise
        except Exception as e:
            log.exception("cannot ingest %s (its checkpoint stays; other files go on)", path)
            self.stuck[path] = f"{type(e).__name__}: {e}"
            return Totals(files_scanned=1, errors=1)
        self.stuck.pop(path, None)
        return totals

    def visit_together(self, paths: Collection[str]) -> Totals:
        """Visit ``paths`` (a round of watcher hints) storing their batches in one transaction.

        Why: a round of appends to 50 files was 50 commits of a few lines each, every one rewriting
        about 15 pages (b-tree edges, indexes, the search index, session figures, the checkpoint) and
        paying the full-text index's cost per transaction: under 2,000 lines/s csmd wrote 117-232 MB/s
        of WAL for 1.2 MB/s of lines (bench/RESULTS.md, "One transaction per round"). Each file's
        checkpoint still moves in the transaction that holds its rows; the sinks write what they
        derived once per commit, and their ``committed`` hooks run after it. A round commits early once
        it holds ``batch_lines`` lines or ``ROUND_BYTES`` or is ``ROUND_S`` old, so a large catch-up is still
        stored in bounded transactions and fresh lines are not kept waiting.

        A database error rolls back what is not committed and propagates (the syncer backs off and
        retries the round); any other failure, which one file's content may cause, rolls it back and
        the round is stored again file by file (``visit``), where it is confined to its file, its batch
        and in the end its line.
        """
        try:
            return self._round(paths)
        except Exception as e:
            if _database_trouble(e):
                raise
            log.warning("a round of %d files failed (%s: %s); storing them one by one", len(paths),
                        type(e).__name__, e)
        totals = Totals()
        for path in paths:
            totals += self.visit(path)
        return totals

    def _round(self, paths: Collection[str]) -> Totals:
        totals = Totals()
        self.round = Round(self.events, self.next_event_id)
        try:
            with self.store.together():
                for path in paths:
                    totals += self._visit(path)
                    self.stuck.pop(path, None)
                self._commit_round()
        except BaseException:
            self._forget_round()
            raise
        finally:
            self.round = None
            self._clear_sinks()
        return totals

    def _commit_round(self) -> None:
        """Commit the round so far (the sinks' data of all its batches first), then run the hooks."""
        r = self.round
        assert r is not None
        if r.batches:
            with self.store.transaction():
                for sink in self.sinks:
                    sink.write(self.store)
        self.store.commit()
        self._clear_sinks()
        self.round = Round(self.events, self.next_event_id)
        self._committed(r.batches)

    def _forget_round(self) -> None:
        """After a round was rolled back: memory as the database says, so nothing adopted from its
        uncommitted batches (checkpoints, counters, known prompts, unreadable files) remains. If the
        database cannot be read now, the next visit reads it first (``stale``)."""
        r = self.round
        assert r is not None
        self.events, self.next_event_id = r.events, r.next_event_id
        self.stale = True
        self._reload()

    def _reload(self) -> None:
        self.checkpoints.reload()
        self.have_prompt = self.store.files_with_prompt()
        self.unreadable = self.store.unreadable_files()
        self.stale = False

    def _visit(self, path: str) -> Totals:
        if self.stale:
            self._reload()
        totals = Totals(files_scanned=1)
        if path in self.tree.exclude or not self._storable(path):
            return totals
        try:
            fd = os.open(path, OPEN_FLAGS)
        except FileNotFoundError:
            f = self.checkpoints.live.get(path)
            if f is not None and not f.gone_at:
                self.checkpoints.mark_gone(f)
            return totals
        except OSError as e:
            totals.errors += int(self._unreadable(path, e))
            return totals
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return totals
            f = self.checkpoints.identify(path, fd, st)
            if f is None or f.file_id in self.reading:
                return totals
            if f.file_id in self.unreadable:
                with self.store.transaction():
                    self.store.clear_unreadable(f.file_id)
                self.unreadable.discard(f.file_id)
                log.info("%s can be read again", path)
            self.reading.add(f.file_id)
            try:
                changed = self._catch_up(f, fd, st, totals)
            finally:
                self.reading.discard(f.file_id)
            totals.files_changed += int(changed)
        finally:
            os.close(fd)
        return totals

    def _storable(self, path: str) -> bool:
        """A path that is not valid UTF-8 cannot be stored as text; Claude Code never writes one."""
        try:
            path.encode("utf-8")
            return True
        except UnicodeEncodeError:
            if path not in self.skipped:
                self.skipped.add(path)
                log.warning("skipping %r: its name is not valid UTF-8", path)
            return False

    def _unreadable(self, path: str, e: OSError) -> bool:
        """Record (once) that a transcript cannot be opened; it is cleared once it can be.
        Returns whether this is news."""
        if e.errno in (errno.ELOOP, errno.ENXIO):  # a symlink (not followed) or a socket/FIFO
            return False
        root = self.tree.root_of(Path(path))
        if root is None:
            return False
        f = self.checkpoints.live.get(path)
        if f is not None and f.file_id in self.unreadable:
            return False
        if f is None:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                return False
            f = self.checkpoints.new(path, root, st)
            with self.store.transaction():
                self.store.save_file(f, iso_mtime(st.st_mtime_ns))
            self.checkpoints.live[path] = f
        with self.store.transaction():
            self.store.insert_errors([BadLineRow(f.file_id, path, f.generation, -1, 0, f"cannot read file: {e.strerror}",
                                                 b"")])
        self.unreadable.add(f.file_id)
        log.warning("cannot read %s: %s", path, e.strerror)
        return True

    def _catch_up(self, f: FileRow, fd: int, st: os.stat_result, totals: Totals) -> bool:
        """Read and commit every complete line after the checkpoint, batch by batch."""
        if st.st_size == f.offset and f.size == st.st_size and f.mtime_ns == st.st_mtime_ns:
            return False
        reattach = self._old_rows(f) if f.generation else None
        changed = False
        if reader.after_unterminated(fd, f.offset) == b"\n":  # the final line stored without one got its newline
            self._commit(f, fd, st, f.offset + 1, [], None, totals)
        while True:
            try:
                lines = reader.read_lines(fd, f.offset, self.config.batch_bytes, self.config.max_line_bytes)
            except reader.LineTooLong as e:
                head = os.pread(fd, ERROR_HEAD, f.offset)
                self._commit(f, fd, st, f.offset, [], reattach, totals, too_long=(e.length, head))
                changed = True
                continue
            if not lines:
                break
            changed = True
            start = f.offset
            long = len(lines[0]) if len(lines[0]) > self.config.batch_bytes else 0  # a long line comes alone
            with self.heap_cap.room_for(long) if long and self.heap_cap else nullcontext():
                for i in range(0, len(lines), self.config.batch_lines):
                    chunk = lines[i : i + self.config.batch_lines]
                    start = self._commit(f, fd, st, start, chunk, reattach, totals)
            if self.rescans.backlog is not None:
                self.live_first(f.path)
            if self.stopping.is_set():
                return changed
        if f.offset < st.st_size and self.final_due.pop(f.file_id, None) == (st.st_size, st.st_mtime_ns):
            changed |= self._final_line(f, fd, st, reattach, totals)
        if f.size != st.st_size or f.mtime_ns != st.st_mtime_ns:
            # A partial last line is left (or only it arrived, or nothing did): remember what was seen.
            self._commit(f, fd, st, f.offset, [], None, totals, seen=max(st.st_size, f.offset))
        return changed

    def _final_line(self, f: FileRow, fd: int, st: os.stat_result, reattach: Reread | None, totals: Totals) -> bool:
        """Store the bytes after the last newline as the file's final line, if they are a complete JSON object."""
        length = st.st_size - f.offset
        try:
            reader.check_length(length, self.config.max_line_bytes)
        except reader.LineTooLong:
            return False
        line = os.pread(fd, length, f.offset)
        if len(line) != length or b"\n" in line:
            return False  # changed under us: the next visit looks again
        try:
            line.decode("utf-8")
            parse(line)
        except (UnicodeDecodeError, BadLine):
            return False  # not (yet) a record: it waits for its newline
        log.info("%s: its final line has no newline and has not changed for %g s; stored", f.path,
                 self.config.final_line_after_s)
        self._commit(f, fd, st, f.offset, [line], reattach, totals, unterminated=True)
        return True

    def final_lines(self) -> Totals:
        """Store the final lines that never got their newline (run after each rescan).

        A file's bytes after its last newline are a line still being written, until csmd has seen
        the file unchanged (inode, size, mtime) for ``final_line_after_s`` by its own clock, over
        two of these passes: then, if they are a complete JSON object, they are stored as its final
        line (``_final_line``). Bytes that are not one are not read again until the file changes.
        """
        totals = Totals()
        now = time.monotonic()
        waiting: dict[int, tuple[tuple[int, int], float | None]] = {}
        for f in list(self.checkpoints.live.values()):
            if f.gone_at or f.offset >= f.size:
                continue
            try:
                st = os.stat(f.path, follow_symlinks=False)
            except OSError:
                continue
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (f.dev, f.inode, f.size, f.mtime_ns):
                continue  # it changed: its next visit reads what came
            seen = (st.st_size, st.st_mtime_ns)
            first = self.waiting.get(f.file_id)
            if first is None or first[0] != seen:
                waiting[f.file_id] = (seen, now)
                continue
            waiting[f.file_id] = first
            since = first[1]
            if since is None or now - since < self.config.final_line_after_s:
                continue
            self.final_due[f.file_id] = seen
            totals += self.visit(f.path)
            self.final_due.pop(f.file_id, None)
            if f.offset < f.size:
                waiting[f.file_id] = (seen, None)  # looked at, not a record: not again until it changes
        self.waiting = waiting
        return totals

    def _old_rows(self, f: FileRow) -> Reread | None:
        """What earlier generations of ``f`` hold, for a re-read to re-attach instead of copying.

        Keyed by a 16-byte hash of each line, not the line, so that re-reading a large file
        keeps memory proportional to its line count, not its size.
        """
        rows: dict[bytes, list[int]] = {}
        for rowid, raw in self.store.old_generation_rows(f.file_id, f.generation):
            rows.setdefault(reader.digest(raw.encode()), []).append(rowid)
        errors: dict[tuple[int, bytes], list[int]] = {}
        for err_id, length, head in self.store.old_generation_errors(f.file_id, f.generation):
            errors.setdefault((length, head), []).append(err_id)
        return Reread(rows, errors) if rows or errors else None

    def _commit(
        self, f: FileRow, fd: int, st: os.stat_result, start: int, lines: list[bytes],
        reattach: Reread | None, totals: Totals, seen: int | None = None, too_long: tuple[int, bytes] | None = None,
        unterminated: bool = False, failed: str | None = None,
    ) -> int:
        """Store ``lines`` (which begin at ``start``) and move the checkpoint past them, atomically.

        The checkpoint's ``size`` says how far csm has looked: the end of these lines, or ``seen``
        once a visit read to the end of the file (a partial last line included). It must never be
        the whole file's size while complete lines remain unread: a rescan takes a file whose size
        and mtime match its checkpoint for done, so a visit cut short (SIGTERM, SIGKILL, an error)
        would leave the rest unread until the file changed again. (``too_long``, ``unterminated``,
        ``failed``: see ``batch.collect``.)

        The rows, what the sinks derived from them and the checkpoint commit together or not at
        all, and the sinks are cleared either way. When the transaction fails for a reason other
        than the database itself (what one line's derived data holds), the lines are committed in
        halves, down to the one line that fails alone, which is then stored with nothing derived
        (``failed`` says why, in ``line_errors``): one line never holds up the others.
        """
        b = collect(f, start, lines, next_id=self.next_event_id, max_line=self.config.max_line_bytes,
                    long_line=self.config.batch_bytes,
                    reattach=reattach, want_prompt=f.file_id not in self.have_prompt, too_long=too_long,
                    unterminated=unterminated, failed=failed)
        # The new checkpoint is built aside and adopted only once it is committed (in a round: once its
        # rows are written, and forgotten if the round rolls back), so a failed transaction (disk
        # full, locked) leaves memory and database agreeing.
        g = msgspec.structs.replace(f, offset=b.end, size=b.end if seen is None else seen, mtime_ns=st.st_mtime_ns,
                                    tail_hash=reader.tail(fd, b.end), parent_session=b.parent_session)
        if g.head_len < reader.HEAD_LEN:
            g.head_len, g.head_hash = reader.head(fd, g.size)
        r = self.round
        try:
            self._derive(f, b)
            if r is None:
                self.store.write_batch(b, g, iso_mtime(st.st_mtime_ns), self.sinks)
            else:  # the sinks write at the round's commit
                with self.store.transaction():
                    self.store.write_rows(b, g, iso_mtime(st.st_mtime_ns))
        except Exception as e:
            if r is not None:
                raise  # the round is rolled back whole and stored again file by file
            b.give_back()
            if _database_trouble(e) or failed is not None:
                raise
            self._clear_sinks()  # before the retries, which fill them again
            if len(lines) > 1:
                half = len(lines) // 2
                pos = self._commit(f, fd, st, start, lines[:half], reattach, totals)
                return self._commit(f, fd, st, pos, lines[half:], reattach, totals, seen, too_long, unterminated)
            why = f"{type(e).__name__}: {e}"
            log.warning("%s: the line at offset %d is stored without its derived data: %s", f.path, start, why)
            return self._commit(f, fd, st, start, lines, reattach, totals, seen, too_long, unterminated, why)
        finally:
            if r is None:
                self._clear_sinks()
        self.next_event_id += len(b.rows)
        adopt(f, g)
        if b.agg is not None and b.agg.first_prompt:
            self.have_prompt.add(f.file_id)
        self.events += len(b.rows)
        totals.lines += len(b.rows)
        totals.errors += len(b.errors)
        if r is None:
            self._committed([(f, b)])
        elif r.add(f, b, self.config) or time.monotonic() - r.started >= ROUND_S:
            self._commit_round()
        return b.end

    def _committed(self, batches: list[tuple[FileRow, Batch]]) -> None:
        for sink in self.sinks:
            try:
                sink.committed(batches)
            except Exception:  # after the commit: a hook (csm watch) can fail only itself
                log.exception("the %s sink failed after a commit of %s", sink.name,
                              ", ".join(dict.fromkeys(f.path for f, _ in batches)))

    def _clear_sinks(self) -> None:
        for sink in self.sinks:
            sink.clear()

    def _derive(self, f: FileRow, b: Batch) -> None:
        """Each sink's data from each new line's view; a failure is the line's error, not the batch's.

        A sink's ``add`` takes the whole line or raises having taken none of it (see ``Sink``)."""
        sinks = [s for s in self.sinks if type(s).add is not Sink.add]
        for row, view in zip(b.rows, b.views):
            if view is None:
                continue  # stored with nothing derived (its view failed, or its batch did alone)
            for sink in sinks:
                try:
                    sink.add(row, f, view)
                except Exception as e:
                    b.line_errors.append(LineError(row.id, sink.name, error_text(e)))
                    if not isinstance(e, ValueError):  # a sink's own refusal is expected; anything else is a bug
                        log.warning("%s: the %s of line %d failed: %s: %s", f.path, sink.name, row.id,
                                    type(e).__name__, e)


class Round:
    """What ``visit_together`` stored since its last commit: the batches (for the hooks after the commit),
    their size (to bound the transaction), and the counters as they were at that commit."""

    def __init__(self, events: int, next_event_id: int) -> None:
        self.events = events
        self.next_event_id = next_event_id
        self.batches: list[tuple[FileRow, Batch]] = []
        self.lines = 0
        self.bytes = 0
        self.started = time.monotonic()

    def add(self, f: FileRow, b: Batch, config: Config) -> bool:
        """One more batch; whether the round now holds enough to commit."""
        self.batches.append((f, b))
        self.lines += len(b.rows) + len(b.errors)
        self.bytes += b.end - b.start
        return self.lines >= config.batch_lines or self.bytes >= min(ROUND_BYTES, config.batch_bytes)

"""The ingest thread: decides what changed in a file and moves rows and checkpoint together.

Watcher events and rescans are only hints ("look at this path"); the truth is always
re-derived here from the file and its checkpoint row. For each visit:

1. appended   -> read from the committed offset to the last ``\\n``;
2. partial    -> bytes after the last ``\\n`` are never consumed;
3. truncated  -> size below the offset, size shrank, or the bytes before the offset
                 changed: read again from 0 as a new generation;
4. replaced   -> same path, new inode or new head: read again from 0 as a new generation;
5. renamed    -> a path holding the (dev, inode, head) of a checkpoint, live or gone, whose own
                 path no longer holds it: the checkpoint follows the file, whatever happened in
                 between (chains of renames, swaps), and nothing is read twice;
6. deleted    -> rows stay; the checkpoint is marked gone with the time;
7. inode reuse never inherits an offset: a claimed checkpoint is then checked like any other
   (size, head, the tail before its offset), so different bytes are read again from 0,
   re-attaching only lines that are really the same.

A re-read (3, 4) re-attaches each unchanged line to its existing row instead of
inserting it again, so it adds nothing twice and loses nothing: lines that vanished
from the file keep their rows under the old generation.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from csm.daemon import heap, reader
from csm.daemon.parse import BadLine, LineView, parse, prompt_text
from csm.daemon.store import FileRow, Store, now_iso
from csm.shared.config import Config
from csm.shared.protocol import Backlog

log = logging.getLogger("csm.ingest")

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
MESSAGE_TYPES = frozenset({"user", "assistant"})
ERROR_HEAD = 200


def _holds(f: FileRow) -> bool:
    """Whether ``f``'s path still holds the inode its checkpoint was made on."""
    try:
        st = os.stat(f.path, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (f.dev, f.inode)


def _iso_mtime(mtime_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime_ns / 1e9))


def describe_path(root: Path, path: Path) -> tuple[str, str, str | None]:
    """(project, session key, parent session) from where a file sits under its root.

    ``<project>/<session>.jsonl`` is a main session. ``<project>/<session>/subagents/
    agent-<id>.jsonl`` (at any depth below the session folder) is a subagent whose
    parent is the folder's session. The project is the folder name, an opaque key:
    Claude Code's encoding of the cwd into it cannot be reversed.
    """
    rel = path.relative_to(root).parts
    project = rel[0] if len(rel) > 1 else ""
    stem = path.stem
    if len(rel) <= 2:
        return project, stem, None
    parent = rel[1]
    key = stem if stem.startswith("agent-") else f"{parent}/{'/'.join(rel[2:])[:-len('.jsonl')]}"
    return project, key, parent


@dataclass
class SessionAgg:
    """One batch's contribution to one session's figures."""

    project: str
    parent: str | None
    is_subagent: bool
    cwd: str | None = None
    first_ts: str | None = None
    last_ts: str | None = None
    lines: int = 0
    messages: int = 0
    custom_title: str | None = None
    ai_title: str | None = None
    summary: str | None = None
    first_prompt: str | None = None
    models: set[str] = field(default_factory=set)

    def add(self, v: LineView, counted: bool) -> None:
        ts = v.timestamp
        if ts:
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
        if v.cwd:
            self.cwd = v.cwd
        if counted:
            self.lines += 1
            if v.type in MESSAGE_TYPES and not v.is_meta:
                self.messages += 1
        if v.custom_title:
            self.custom_title = v.custom_title
        if v.ai_title:
            self.ai_title = v.ai_title
        if v.summary and v.type == "summary":
            self.summary = v.summary
        if v.type == "assistant" and v.message is not None and v.message.model:
            if not v.message.model.startswith("<"):
                self.models.add(v.message.model)


def _why(e: UnicodeDecodeError | BadLine) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"invalid UTF-8: {e.reason} at byte {e.start}"
    return str(e)


def _after_nuls(line: bytes) -> tuple[int, bytes, str, LineView] | None:
    """The record after a run of NUL bytes, if one is there: (NULs cut, record, its text, view).

    A crash on ext4 can leave the unflushed end of a file as NUL bytes, and Claude Code's next
    append then lands on the same line after them; the record is intact and is kept.
    """
    cut = line.rfind(b"\0") + 1
    if not cut or cut == len(line):
        return None
    rest = line[cut:]
    try:
        return cut, rest, rest.decode("utf-8"), parse(rest)
    except (UnicodeDecodeError, BadLine):
        return None


def _text(line: bytes, long: int) -> str | bytes:
    """The line as ``raw`` is bound, checked as UTF-8: its str, or for a line over ``long`` bytes the
    bytes themselves (``Store.insert_events`` stores them unchanged as TEXT): the str of a long
    line would be one more copy of it (two to four for text beyond Latin-1, and its UTF-8 form)."""
    text = line.decode("utf-8")
    return line if len(line) > long else text


@dataclass
class Reread:
    """An earlier generation's rows and bad lines, by content, for a re-read to find again."""

    rows: dict[bytes, list[int]]
    errors: dict[tuple[int, bytes], list[int]]


@dataclass
class Batch:
    """What one transaction stores: new rows, re-attached rows, bad lines, session figures, line errors."""

    end: int
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    moves: list[tuple[int, int, int]] = field(default_factory=list)
    errors: list[tuple[Any, ...]] = field(default_factory=list)
    error_moves: list[tuple[int, int, int]] = field(default_factory=list)
    line_errors: list[tuple[int, str, str]] = field(default_factory=list)
    sessions: dict[str, SessionAgg] = field(default_factory=dict)
    agg: SessionAgg | None = None
    taken: list[tuple[dict[Any, list[int]], Any, int]] = field(default_factory=list)
    """Rows and bad lines taken from a re-read's pool, given back if the transaction fails."""

    def give_back(self) -> None:
        for pool, key, row_id in reversed(self.taken):
            pool.setdefault(key, []).append(row_id)
        self.taken.clear()


def _error_text(e: Exception) -> str:
    """A derived-data failure as recorded: a sink's own error (``UsageError``) says it all; a bug names its type."""
    return str(e) if isinstance(e, ValueError) and str(e) else f"{type(e).__name__}: {e}"


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


@dataclass
class Totals:
    """What one sync or visit did, for ``csm sync`` and the log."""

    files_scanned: int = 0
    files_changed: int = 0
    lines: int = 0
    errors: int = 0

    def __iadd__(self, other: Totals) -> Totals:
        self.files_scanned += other.files_scanned
        self.files_changed += other.files_changed
        self.lines += other.lines
        self.errors += other.errors
        return self


CommitHook = Callable[[FileRow, list[tuple[Any, ...]]], None]
"""Called after each commit with the file and its new ``events`` rows (id first)."""


class Sink(Protocol):
    """Derived data (indexes, usage, …) the writer keeps current in the same transaction as the rows.

    A batch's life: ``add`` for each newly inserted line, then ``write`` inside the batch's
    transaction, then ``clear``, always, whether the transaction committed, rolled back or never
    began, so nothing a sink holds outlives its batch. ``add`` takes the whole line or raises
    having taken none of it: the line is then stored without this sink's data and the error is
    recorded against it as ``name`` (``line_errors``). Re-attached lines (a re-read of an
    unchanged line) are not added again.
    """

    name: str

    def add(self, event_id: int, f: FileRow, view: LineView, line: bytes) -> None: ...

    def write(self, store: Store) -> None: ...

    def clear(self) -> None: ...


class Ingestor:
    """Owns the writer connection; every method runs on the ingest thread."""

    def __init__(self, store: Store, roots: list[Path], config: Config, exclude: Iterable[Path] = (),
                 heap_cap: heap.SqliteCap | None = None) -> None:
        self.store = store
        self.heap_cap = heap_cap
        self.roots = roots
        self.config = config
        self.exclude = {str(p) for p in exclude}
        self.by_id: dict[int, FileRow] = {f.file_id: f for f in store.files()}
        self.files: dict[str, FileRow] = {f.path: f for f in self.by_id.values() if not f.gone_at}
        """Live checkpoints by path; a gone one keeps the path its file was last seen at, which another
        file may hold by now, so gone ones are found by file id, inode or path in the database."""
        self.next_id = store.next_file_id()
        self.have_prompt: set[int] = {
            r[0] for r in store.conn.execute("SELECT file_id FROM session_stats WHERE first_prompt IS NOT NULL")
        }
        self.unreadable: set[int] = store.unreadable_files()
        self.events = store.count_events()
        self.next_event_id = store.max_event_id() + 1
        self.backlog: Backlog | None = None
        self.progress: Callable[[], None] | None = None
        self.started = 0.0
        self.file_end = 0
        self.on_commit: list[CommitHook] = []
        self.sinks: list[Sink] = []
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

    # --- scanning ------------------------------------------------------------------

    def root_of(self, path: Path) -> Path | None:
        for root in self.roots:
            if path.is_relative_to(root):
                return root
        return None

    def discover(self, top: Path) -> Iterable[tuple[str, os.stat_result]]:
        """Every regular ``*.jsonl`` under ``top``; symlinks are never followed."""
        stack = [str(top)]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(d)
            except OSError:
                continue
            with it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.name.endswith(".jsonl") and entry.is_file(follow_symlinks=False):
                            if entry.path not in self.exclude:
                                yield entry.path, entry.stat(follow_symlinks=False)
                    except OSError:
                        continue

    def rescan(self, progress: Callable[[], None] | None = None, top: Path | None = None) -> Totals:
        """Compare every file under the roots (or ``top``) with its checkpoint and catch up.

        Unchanged files (same inode, size and mtime) cost one ``stat``; the rest are
        visited. Files whose checkpoints lie under a scanned root but that no longer
        exist are marked gone — never those of other roots; a full rescan also marks gone
        the files of a root deleted whole or no longer configured. ``self.backlog`` shows the
        work while it lasts: growing totals while files are listed, then files and bytes
        done, moved by every committed batch (``_batch_done``), so one huge file shows too.
        """
        totals = Totals()
        tops = [top] if top else [r for r in self.roots if r.is_dir()]
        seen: set[str] = set()
        todo: list[tuple[str, int]] = []
        strangers: list[tuple[str, os.stat_result]] = []
        """Paths whose file is not their checkpoint's: maybe another checkpoint's, moved here."""
        b = self.backlog = Backlog(counting=True)
        self.progress = progress
        for t in tops:
            for path, st in self.discover(t):
                seen.add(path)
                totals.files_scanned += 1
                f = self.files.get(path)
                if (
                    f is None or f.inode != st.st_ino or f.dev != st.st_dev
                    or f.size != st.st_size or f.mtime_ns != st.st_mtime_ns
                ):
                    size = max(0, st.st_size - (f.offset if f else 0))
                    if f is None or (f.dev, f.inode) != (st.st_dev, st.st_ino):
                        strangers.append((path, st))
                    todo.append((path, size))
                    b.files_total += 1
                    b.bytes_total += size
                    if progress and b.files_total % 256 == 0:
                        progress()
        # Every moved file claims its checkpoint before any path is read: whatever the order of the
        # visits, a file renamed, swapped or rotated while csmd was stopped is never taken for a new
        # file or for the replacement of the file now at its old path.
        for path, st in strangers:
            if not self.stopping.is_set() and self.store.with_inode(st.st_dev, st.st_ino):
                self._claim_at(path)
        try:
            b.counting = False
            self.started = time.monotonic()
            for path, size in todo:
                if self.stopping.is_set():
                    break
                self.file_end = b.bytes_done + size
                visited = self.visit(path)
                visited.files_scanned = 0  # counted above
                totals += visited
                b.files_done += 1
                b.bytes_done = self.file_end
                self._tick()
        finally:
            self.backlog = self.progress = None
        # Files not seen are gone when they no longer exist — under a root deleted whole too — and, after
        # a full rescan, when no configured root holds them any more: csm no longer follows those.
        prefixes = [str(t) + os.sep for t in (self.roots if top is None else tops)]
        for path, f in list(self.files.items()):
            if f.gone_at or path in seen:
                continue
            if not any(path.startswith(p) for p in prefixes):
                if top is None:
                    self.mark_gone(f, "not under a configured root")
            elif not os.path.lexists(path):
                self.mark_gone(f)
        return totals

    # --- one file ------------------------------------------------------------------

    def mark_gone(self, f: FileRow, why: str = "source file gone") -> None:
        when = now_iso()
        with self.store.transaction():
            self.store.mark_gone(f.file_id, when)
        f.gone_at = when  # only once committed, so a failed write is retried
        if self.files.get(f.path) is f:
            del self.files[f.path]
        log.info("%s, rows kept: %s", why, f.path)

    def moved(self, src: str, dest: str) -> Totals:
        """A rename seen by the watcher. The destination is visited like any path (its identity finds
        the checkpoint, even if ``src`` was itself the end of an earlier rename); a move out of sight
        (``x.jsonl.bak``) takes the checkpoint along, so the file is the same one when it comes back."""
        f = self.files.get(src)
        if f is not None and not dest.endswith(".jsonl") and dest not in self.files:
            try:
                st = os.stat(dest, follow_symlinks=False)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == (f.dev, f.inode):
                self._rename(f, dest)
        totals = self.visit(dest) if dest.endswith(".jsonl") else Totals()
        g = self.files.get(src)
        if g is not None and not os.path.lexists(src):
            self.mark_gone(g)
        return totals

    def _rename(self, f: FileRow, dest: str, displaced: FileRow | None = None) -> None:
        """``f``'s file is now at ``dest``: move the checkpoint (live again if it was gone) and its session.
        ``displaced``, the live checkpoint of ``dest`` whose file is not there any more, is marked gone
        in the same transaction (its file may turn up elsewhere and claim it back)."""
        root = self.root_of(Path(dest))
        if root is None:
            return
        g = msgspec.structs.replace(f, path=dest, root=str(root), gone_at=None)
        if dest.endswith(".jsonl"):  # a move to x.jsonl.bak keeps its session until it comes back
            g.project, g.session_key, parent = describe_path(root, Path(dest))
            g.parent_session = parent or f.parent_session
        when = now_iso()
        with self.store.transaction():
            if displaced is not None:
                self.store.mark_gone(displaced.file_id, when)
            self.store.save_file(g, _iso_mtime(g.mtime_ns))
            if (g.session_key, g.project) != (f.session_key, f.project):
                self.store.move_session(g.file_id, (f.session_key, f.project), (g.session_key, g.project))
        if displaced is not None:
            displaced.gone_at = when
            log.info("%s holds another file now; its checkpoint is gone, rows kept", dest)
        if self.files.get(f.path) is f:
            del self.files[f.path]
        if f.path != dest:
            log.info("renamed: %s -> %s (offset %d kept)", f.path, dest, f.offset)
        for name in FileRow.__struct_fields__:
            setattr(f, name, getattr(g, name))
        self.files[dest] = f

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

    def _visit(self, path: str) -> Totals:
        totals = Totals(files_scanned=1)
        if path in self.exclude or not self._storable(path):
            return totals
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            f = self.files.get(path)
            if f is not None and not f.gone_at:
                self.mark_gone(f)
            return totals
        except OSError as e:
            totals.errors += int(self._unreadable(path, e))
            return totals
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return totals
            f = self._identify(path, fd, st)
            if f is None:
                return totals
            if f.file_id in self.unreadable:
                with self.store.transaction():
                    self.store.clear_unreadable(f.file_id)
                self.unreadable.discard(f.file_id)
                log.info("%s can be read again", path)
            changed = self._catch_up(f, fd, st, totals)
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
        root = self.root_of(Path(path))
        if root is None:
            return False
        f = self.files.get(path)
        if f is not None and f.file_id in self.unreadable:
            return False
        if f is None:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                return False
            f = self._new_row(path, root, st)
            with self.store.transaction():
                self.store.save_file(f, _iso_mtime(st.st_mtime_ns))
            self.files[path] = f
        with self.store.transaction():
            self.store.insert_errors([(f.file_id, path, f.generation, -1, 0, f"cannot read file: {e.strerror}", b"")])
        self.unreadable.add(f.file_id)
        log.warning("cannot read %s: %s", path, e.strerror)
        return True

    def _new_row(self, path: str, root: Path, st: os.stat_result) -> FileRow:
        project, key, parent = describe_path(root, Path(path))
        f = FileRow(
            file_id=self.next_id, path=path, root=str(root), project=project, session_key=key,
            parent_session=parent, dev=st.st_dev, inode=st.st_ino, size=0, mtime_ns=-1, offset=0,
        )  # mtime -1: never saved yet, so the first visit always writes the checkpoint
        self.next_id += 1
        self.by_id[f.file_id] = f
        return f

    def _identify(self, path: str, fd: int, st: os.stat_result) -> FileRow | None:
        """The checkpoint this file continues, reset to offset 0 when it must be read again."""
        f = self.files.get(path)
        if f is None or (f.dev, f.inode) != (st.st_dev, st.st_ino):
            f = self._claim(path, fd, st, f) or f
        if f is None:
            root = self.root_of(Path(path))
            if root is None:
                return None
            gone = self.store.gone_at_path(path)
            if gone is None:
                f = self._new_row(path, root, st)
                self.files[path] = f
                return f
            f = self.by_id[gone]  # a file at a gone checkpoint's path, not its own file: read again below
            self._rename(f, path)
            log.info("%s: reappeared", path)
        why = None
        if (f.dev, f.inode) != (st.st_dev, st.st_ino):
            why = "replaced (new inode)"
        elif st.st_size < f.offset or st.st_size < f.size:
            why = f"truncated ({f.size} -> {st.st_size} bytes)"
        elif not reader.head_matches(fd, f.head_len, f.head_hash):
            why = "replaced (new head)"
        elif f.offset and reader.tail(fd, f.offset) != f.tail_hash:
            why = "rewritten before the checkpoint"
        elif reader.after_unterminated(fd, f.offset) not in (None, b"", b"\n"):
            why = "its final line, stored without a newline, went on"
        if why:
            log.info("%s: %s; reading it again from the start", path, why)
            f.generation += 1
            f.offset = 0
            f.size, f.mtime_ns = 0, -1
            f.dev, f.inode = st.st_dev, st.st_ino
            f.head_len, f.head_hash, f.tail_hash = 0, None, None
        return f

    def _claim_at(self, path: str) -> None:
        """Let the file at ``path`` claim its checkpoint if it is another path's (see ``_claim``)."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            f = self.files.get(path)
            if stat.S_ISREG(st.st_mode) and (f is None or (f.dev, f.inode) != (st.st_dev, st.st_ino)):
                self._claim(path, fd, st, f)
        finally:
            os.close(fd)

    def _claim(self, path: str, fd: int, st: os.stat_result, here: FileRow | None) -> FileRow | None:
        """The checkpoint, live or gone, whose file ``path`` now holds, moved to ``path``; ``here`` (the
        checkpoint of ``path``, on another inode) is displaced.

        Its file: the same (dev, inode) and the same first bytes (head hash), and its own path no longer
        holds that inode (else this is a hard link: two files). Nothing else about the past matters, so
        chains of renames faster than csmd, swaps and rotations all end with each checkpoint on its file.
        A gone checkpoint qualifies too: it was marked gone because its path was empty when csmd looked.
        Inode reuse is safe: the claimed checkpoint is then checked like any other, and bytes before its
        offset that differ (the tail hash) make it read again from 0, re-attaching only identical lines.
        """
        for file_id in self.store.with_inode(st.st_dev, st.st_ino):
            f = self.by_id.get(file_id)
            if f is None or f is here or not f.head_len or (f.path != path and _holds(f)):
                continue
            if reader.head_matches(fd, f.head_len, f.head_hash):
                self._rename(f, path, displaced=here)
                return f
        return None

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
                self._commit(f, fd, st, f.offset, [], reattach, totals, too_long=e.length)
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
        if length > self.config.max_line_bytes:
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
        for f in list(self.files.values()):
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
        reattach: Reread | None, totals: Totals, seen: int | None = None, too_long: int = 0,
        unterminated: bool = False, failed: str | None = None,
    ) -> int:
        """Store ``lines`` (which begin at ``start``) and move the checkpoint past them, atomically.

        The checkpoint's ``size`` says how far csm has looked: the end of these lines, or ``seen``
        once a visit read to the end of the file (a partial last line included). It must never be
        the whole file's size while complete lines remain unread: a rescan takes a file whose size
        and mtime match its checkpoint for done, so a visit cut short (SIGTERM, SIGKILL, an error)
        would leave the rest unread until the file changed again.

        ``too_long``: after them comes a line of that many bytes, over ``max_line_bytes``: it is
        recorded as a bad line (its head only) and the checkpoint moves past it too.
        ``unterminated``: the last line is the file's final line, without a newline.

        The rows, what the sinks derived from them and the checkpoint commit together or not at
        all, and the sinks are cleared either way. When the transaction fails for a reason other
        than the database itself (what one line's derived data holds), the lines are committed in
        halves, down to the one line that fails alone, which is then stored with nothing derived
        (``failed`` says why, in ``line_errors``): one line never holds up the others.
        """
        b = self._collect(f, fd, start, lines, reattach, too_long, unterminated, failed)
        # The new checkpoint is built aside and adopted only once it is committed, so a
        # failed transaction (disk full, locked) leaves memory and database agreeing.
        g = msgspec.structs.replace(f, offset=b.end, size=b.end if seen is None else seen, mtime_ns=st.st_mtime_ns,
                                    tail_hash=reader.tail(fd, b.end))
        if g.head_len < reader.HEAD_LEN:
            g.head_len, g.head_hash = reader.head(fd, g.size)
        try:
            self._write(f, g, st, b)
        except Exception as e:
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
            self._clear_sinks()
        self.next_event_id += len(b.rows)
        for name in FileRow.__struct_fields__:
            setattr(f, name, getattr(g, name))
        if b.agg is not None and b.agg.first_prompt:
            self.have_prompt.add(f.file_id)
        self.events += len(b.rows)
        totals.lines += len(b.rows)
        totals.errors += len(b.errors)
        for hook in self.on_commit:
            try:
                hook(f, b.rows)
            except Exception:  # after the commit: a hook (csm watch) can fail only itself
                log.exception("a commit hook failed on a batch of %s", f.path)
        if self.backlog is not None:
            self._batch_done(b.end - start)
        return b.end

    def _clear_sinks(self) -> None:
        for sink in self.sinks:
            sink.clear()

    def _collect(
        self, f: FileRow, fd: int, start: int, lines: list[bytes], reattach: Reread | None, too_long: int,
        unterminated: bool, failed: str | None,
    ) -> Batch:
        """A batch's rows, bad lines and session figures, and the sinks' data (in the sinks).

        Whatever fails while deriving one line's data (its view, its session figures and title, a
        sink) is that line's error: the line is still a row, and the other lines go on.
        """
        b = Batch(end=start)
        gen = f.generation
        fallback_session = f.parent_session or f.session_key
        is_sub = f.parent_session is not None or f.session_key.startswith("agent-")
        next_id = self.next_event_id
        derive = failed is None
        max_line = self.config.max_line_bytes
        pos = start
        for line in lines:
            offset = pos
            pos += len(line) + 1
            if len(line) > max_line:  # the same rule when the whole line happened to fit in the read
                self._bad_line(f, offset, len(line), line, self._too_long(len(line)), b, reattach)
                continue
            try:
                raw = _text(line, self.config.batch_bytes)
                v = parse(line)
            except (UnicodeDecodeError, BadLine) as e:
                salvaged = _after_nuls(line)
                if salvaged is None:
                    self._bad_line(f, offset, len(line), line, _why(e), b, reattach)
                    continue
                cut, rest, raw, v = salvaged
                self._bad_line(f, offset, cut, line[:cut], f"{line[:cut].count(0)} NUL bytes before a record (the "
                               f"record after them is kept at offset {offset + cut})", b, reattach)
                line = rest
                offset += cut
            except Exception as e:  # a bug reading a line that is UTF-8: kept, with nothing derived from it
                log.exception("%s: cannot read the line at offset %d", f.path, offset)
                v, derive_line, view_error = LineView(), False, e
            else:
                derive_line, view_error = derive, None
            if f.parent_session is None and f.session_key.startswith("agent-") and v.session_id:
                f.parent_session = v.session_id  # a flat (Claude Code <= 2.0) subagent file
            if b.agg is None:
                b.agg = b.sessions[f.session_key] = SessionAgg(f.project, f.parent_session, is_sub)
            digest = reader.digest(line) if reattach else b""
            old = reattach.rows.get(digest) if reattach else None
            if old:
                b.moves.append((gen, offset, old.pop()))
                b.taken.append((reattach.rows, digest, b.moves[-1][2]))
                if derive_line:
                    b.agg.add(v, counted=False)
                continue
            b.rows.append((next_id, f.file_id, gen, offset, v.session_id or fallback_session, v.uuid, v.parent_uuid,
                           v.type, v.timestamp, raw))
            if view_error is not None:
                b.line_errors.append((next_id, "view", _error_text(view_error)))
            elif not derive_line:
                b.line_errors.append((next_id, "all", f"its batch failed alone: {failed}"))
            else:
                self._derive(next_id, f, v, line, b)
            next_id += 1
        if too_long:
            self._bad_line(f, pos, too_long, os.pread(fd, ERROR_HEAD, pos), self._too_long(too_long), b, reattach)
            pos += too_long + 1
        b.end = pos - 1 if unterminated else pos
        return b

    def _derive(self, event_id: int, f: FileRow, v: LineView, line: bytes, b: Batch) -> None:
        """One new line's session figures, title and sinks' data; a failure is the line's error, not the batch's.

        A sink's ``add`` takes the whole line or raises having taken none of it (see ``Sink``)."""
        for sink in self.sinks:
            try:
                sink.add(event_id, f, v, line)
            except Exception as e:
                b.line_errors.append((event_id, sink.name, _error_text(e)))
                if not isinstance(e, ValueError):  # a sink's own refusal is expected; anything else is a bug
                    log.warning("%s: the %s of line %d failed: %s: %s", f.path, sink.name, event_id, type(e).__name__, e)
        agg = b.agg
        assert agg is not None
        try:
            agg.add(v, counted=True)
            if agg.first_prompt is None and f.file_id not in self.have_prompt:
                agg.first_prompt = prompt_text(v)
        except Exception as e:
            b.line_errors.append((event_id, "sessions", _error_text(e)))

    def _too_long(self, length: int) -> str:
        return f"line of {length} bytes is over the {self.config.max_line_bytes}-byte limit (max_line_bytes); not stored"

    def _bad_line(
        self, f: FileRow, offset: int, length: int, head: bytes, why: str, b: Batch, reattach: Reread | None,
    ) -> None:
        """Record a line that cannot be stored; a re-read finds it again instead of counting it twice."""
        head = head[:ERROR_HEAD]
        old = reattach.errors.get((length, head)) if reattach else None
        if old:
            b.error_moves.append((f.generation, offset, old.pop()))
            b.taken.append((reattach.errors, (length, head), b.error_moves[-1][2]))  # type: ignore[union-attr]
            return
        b.errors.append((f.file_id, f.path, f.generation, offset, length, why, head))

    def _batch_done(self, nbytes: int) -> None:
        """Move the backlog by one committed batch, within the current file's share of the total."""
        b = self.backlog
        if b is not None and not b.counting:
            b.bytes_done = min(b.bytes_done + nbytes, self.file_end)
            self._tick()

    def _tick(self) -> None:
        b = self.backlog
        if b is None:
            return
        elapsed = time.monotonic() - self.started
        b.rate_bps = b.bytes_done / elapsed if elapsed > 0 else 0.0
        b.eta_s = (b.bytes_total - b.bytes_done) / b.rate_bps if b.rate_bps else None
        if self.progress:
            self.progress()

    def _write(self, f: FileRow, g: FileRow, st: os.stat_result, b: Batch) -> None:
        """One transaction: the rows, what derives from them, and the checkpoint past them."""
        with self.store.transaction():
            if b.rows:
                self.store.insert_events(b.rows)
            if b.moves:
                self.store.reattach(b.moves)
            if b.errors:
                self.store.insert_errors(b.errors)
            if b.error_moves:
                self.store.reattach_errors(b.error_moves)
            if b.agg is not None:
                if b.agg.parent is None:
                    b.agg.parent = f.parent_session
                self.store.upsert_sessions([
                    (f.file_id, key, a.project, a.parent, int(a.is_subagent), a.cwd, a.first_ts, a.last_ts, a.lines, a.messages,
                     a.custom_title, a.ai_title, a.summary, a.first_prompt)
                    for key, a in b.sessions.items()
                ])
                self.store.add_models([(f.file_id, m) for a in b.sessions.values() for m in a.models])
            for sink in self.sinks:
                sink.write(self.store)
            if b.line_errors:
                self.store.insert_line_errors(b.line_errors)
            self.store.save_file(g, _iso_mtime(st.st_mtime_ns))

"""File watching: watchdog events become hints for the ingest thread, nothing more.

Rules learnt from watchdog's failure modes:
- the handler only enqueues, so it cannot block, and cannot raise (an exception kills
  the observer's dispatch thread silently);
- the kernel is asked only for created, modified, closed-after-write, moved and deleted
  events (``event_filter`` becomes the inotify mask): csm's own reads would otherwise
  produce open/close-no-write events that wake it again, forever. A read can still
  update a file's atime (once per write under ``relatime``); that attribute event is
  dropped inside watchdog and never reaches csm;
- csm's own files (database, WAL, lock, a log file) are dropped in the handler, even
  when the database sits inside a root;
- a new folder is rescanned when it appears, since files written into it before its
  watch existed produce no events;
- inotify queue overflows are not reported to handlers; watchdog (7.x) only logs them,
  so a log handler on its logger (``OverflowAlarm``) asks for a rescan at once. The
  periodic rescan stays the real guarantee;
- ``check`` runs before every rescan: it restarts a dead observer, watches roots that
  appeared since (so a root created after start is watched from the next rescan on)
  and looks for watches the kernel refused (``verify``, also run after new folders
  appear). A thread dying of an exception asks for a rescan at once (app.py);
- when watches cannot be added (ENOSPC: ``fs.inotify.max_user_watches``; EMFILE:
  ``max_user_instances``) csm polls with rescans every ``poll_interval_s`` instead and
  says so once in the log and in ``csm status``. watchdog raises for the root's watch
  but skips a sub-folder's refusal silently, so ``verify`` probes the limit with a
  watch of its own and, when it is full, compares the folders with the kernel's list
  of csm's watches (``/proc/self/fdinfo``). When room comes back, csm watches again.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import threading
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from csm.daemon.syncer import Syncer
from csm.daemon.tree import Tree

log = logging.getLogger("csm.watch")

EVENTS = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]
LIMITS = {
    errno.ENOSPC: "inotify watch limit reached (raise fs.inotify.max_user_watches)",
    errno.EMFILE: "inotify instance limit reached (raise fs.inotify.max_user_instances)",
}


class FaultInjected(RuntimeError):
    """Raised in the dispatch thread by the ``kill-watcher`` fault (tests only)."""


class OverflowAlarm(logging.Handler):
    """watchdog says "Inotify queue overflowed" only in its log (which shows it): rescan, events were lost."""

    def __init__(self, syncer: Syncer) -> None:
        super().__init__(logging.WARNING)
        self.syncer = syncer

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in str(record.msg).lower():
            self.syncer.request_rescan()


class Hints(FileSystemEventHandler):
    def __init__(self, syncer: Syncer, tree: Tree) -> None:
        self.syncer = syncer
        self.tree = tree
        self.poisoned = False

    def on_any_event(self, event: FileSystemEvent) -> None:
        if self.poisoned:
            self.poisoned = False
            raise FaultInjected("kill-watcher fault: the dispatch thread dies as when a handler raises")
        src = os.fsdecode(event.src_path)
        if event.is_directory:
            if event.event_type == "moved":
                self.syncer.hint_dir(src, os.fsdecode(event.dest_path))
            elif event.event_type in ("created", "deleted"):
                self.syncer.hint_dir(src)
        elif event.event_type == "moved":
            self.syncer.hint_move(src, os.fsdecode(event.dest_path))
        elif self.tree.is_transcript(src):
            self.syncer.hint(src)


class Watcher:
    """One recursive observer over every root; ``mode`` says whether it watches or polls, and why."""

    def __init__(self, tree: Tree, syncer: Syncer, *, enabled: bool = True, poll_interval_s: float = 2.0) -> None:
        self.roots = tree.roots
        self.syncer = syncer
        self.enabled = enabled
        self.poll_interval_s = poll_interval_s
        self.handler = Hints(syncer, tree)
        self.observer: BaseObserver | None = None
        self.watched: dict[Path, ObservedWatch] = {}
        self.refused: set[Path] = set()
        self.limited: str | None = None
        """Why csm polls although watching is enabled (an inotify limit), else None."""
        self.warned = False
        self.restarts = 0
        self.mode = "watching"

    # --- life ------------------------------------------------------------------------

    def start(self) -> None:
        """Called once before the ingest thread starts; ``check`` takes over from there."""
        if not self.enabled:
            self._poll("watching disabled")
            log.info("file watching disabled; rescanning every %g s", self.poll_interval_s)
            return
        logging.getLogger("watchdog").addHandler(OverflowAlarm(self.syncer))
        self._start_observer()

    def stop(self) -> None:
        obs, self.observer = self.observer, None
        self.watched = {}
        if obs is not None:
            try:
                obs.stop()
                obs.join(timeout=2)
            except RuntimeError:
                pass  # never started

    def _start_observer(self) -> None:
        try:
            obs = Observer()
            obs.daemon = True
            obs.name = "csm-watch"
            obs.start()
        except OSError as e:
            self._refused(e)
            return
        self.observer = obs
        self.watched = {}
        self._schedule()

    def _schedule(self) -> None:
        """Watch every root that exists and is not watched yet."""
        assert self.observer is not None
        for root in self.roots:
            if root in self.watched or not root.is_dir():
                continue
            try:
                self.watched[root] = self.observer.schedule(self.handler, str(root), recursive=True,
                                                            event_filter=EVENTS)
            except OSError as e:
                if e.errno in LIMITS:
                    self._refused(e)
                    return
                if root not in self.refused:
                    self.refused.add(root)
                    log.warning("cannot watch %s: %s; the rescan every %g s covers it", root,
                                e.strerror or e, self.syncer.interval_s)
                continue
            self.refused.discard(root)
            if self.syncer.scans:
                log.info("watching %s", root)

    # --- the check before every rescan (ingest thread) ------------------------------

    def check(self) -> None:
        """Restart a dead observer, follow roots that came or went, and notice refused watches."""
        if not self.enabled:
            return
        if self.limited is not None:
            self._retry_after_limit()
            return
        obs = self.observer
        if obs is None or not obs.is_alive() or not _reader_alive(obs):
            self._restart("file watcher stopped")
            return
        for root, watch in list(self.watched.items()):
            emitter = next((e for e in obs.emitters if e.watch == watch), None)
            if root in self.roots and root.is_dir() and emitter is not None and emitter.is_alive():
                continue
            # A root that was deleted stops its emitter; watch it again when it is back. One taken
            # out of the settings (``ReloadConfig``) is simply no longer watched.
            del self.watched[root]
            try:
                obs.unschedule(watch)
            except KeyError:
                pass
            if root not in self.roots:
                log.info("%s is no longer a root; not watching it", root)
            elif root.is_dir():
                log.warning("the watch of %s stopped; watching it again", root)
            else:
                log.info("%s is gone; it is watched again once it exists", root)
        self._schedule()
        self.verify()

    def verify(self) -> None:
        """When the kernel has no room for one more watch, look for folders it refused us.

        Run before each rescan and after new folders appear (whose watches watchdog may
        have failed to add without a word); the probe costs microseconds.
        """
        if not self.enabled or self.observer is None:
            return
        err = probe_limit()
        if err is not None and self.limited is None:
            missing = unwatched_dirs(list(self.watched))
            if missing:
                self._refused(OSError(err, os.strerror(err)), missing)

    def _restart(self, why: str) -> None:
        self.restarts += 1
        log.error("%s; restarting it (the rescan that follows recovers what it missed)", why)
        self.stop()
        self._start_observer()

    def _retry_after_limit(self) -> None:
        """While polling because of a limit: watch again once the kernel has room."""
        if probe_limit() is not None:
            return
        self.stop()
        self.limited = None
        self._start_observer()
        if self.limited is None:
            self.verify()
        if self.limited is None:
            self.warned = False
            self.mode = "watching"
            self.syncer.poll_s = None
            log.info("inotify has room again: watching, rescanning every %g s", self.syncer.rescan_interval_s)

    # --- falling back to polling ------------------------------------------------------

    def _refused(self, e: OSError, missing: list[str] | None = None) -> None:
        reason = LIMITS.get(e.errno or 0, e.strerror or str(e))
        if missing:
            reason += f"; {len(missing)} folders not watched, e.g. {missing[0]}"
        if not self.warned:
            self.warned = True
            log.warning("cannot watch every folder: %s; falling back to polling rescans every %g s", reason,
                        self.poll_interval_s)
        self.limited = reason
        self._poll(reason)

    def _poll(self, reason: str) -> None:
        self.mode = f"polling every {self.poll_interval_s:g} s: {reason}"
        self.syncer.poll_s = self.poll_interval_s

    # --- faults (tests only) ------------------------------------------------------------

    def fault(self, action: str) -> str:
        """Break the observer as watchdog's own failures do, so tests can watch csm recover."""
        obs = self.observer
        if obs is None or not obs.emitters:
            raise ValueError("the watcher is not running")
        if action == "kill-watcher":
            # An exception in a handler ends the dispatch thread; watchdog catches nothing.
            self.handler.poisoned = True
            emitter = next(iter(obs.emitters))
            obs.event_queue.put((FileModifiedEvent(str(emitter.watch.path)), emitter.watch))
            return "the watcher's dispatch thread will die on its next event"
        if action == "stop-watcher":
            obs.stop()
            return "the watcher stopped"
        raise ValueError(f"unknown fault {action!r}; known: kill-watcher, stop-watcher")


def _reader_alive(obs: BaseObserver) -> bool:
    """Emitters and watchdog's inotify reader thread (not public; checked when there is one)."""
    reader = getattr(obs, "_inotify_fd", None)
    return not isinstance(reader, threading.Thread) or reader.is_alive()


# --- the kernel's view (Linux) ----------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
IN_ONLYDIR = 0x01000000
IN_CREATE = 0x00000100


def probe_limit() -> int | None:
    """ENOSPC or EMFILE when one more inotify watch cannot be had right now; None otherwise."""
    if _libc is None:
        return None
    fd = _libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        return err if err in LIMITS else None
    try:
        wd = _libc.inotify_add_watch(fd, b"/", IN_CREATE | IN_ONLYDIR)
        err = ctypes.get_errno()
        return err if wd < 0 and err in LIMITS else None
    finally:
        os.close(fd)


def kernel_watches() -> set[int]:
    """Inode numbers of everything this process's inotify instances watch."""
    inodes: set[int] = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
                for line in f:
                    if line.startswith("inotify wd:"):
                        inodes.add(int(line.split(" ino:", 1)[1].split(None, 1)[0], 16))
        except (OSError, ValueError, IndexError):
            continue
    return inodes


def unwatched_dirs(roots: list[Path]) -> list[str]:
    """Folders under ``roots`` (symlinks not followed) that have no watch in the kernel."""
    watched = kernel_watches()
    missing: list[str] = []
    stack = [str(r) for r in roots]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                subdirs = [e for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for e in subdirs:
            stack.append(e.path)
            if e.inode() not in watched and os.access(e.path, os.R_OK | os.X_OK):
                missing.append(e.path)
    return missing

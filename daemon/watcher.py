"""File watching: watchdog events become hints for the ingest thread, nothing more.

Rules learnt from watchdog's failure modes:
- the handler only enqueues, so it cannot raise (an exception kills the observer thread
  silently) and cannot block;
- the kernel is asked only for created, modified, closed-after-write, moved and deleted
  events: csm's own reads would otherwise produce open/close-no-write events that wake
  it again, forever;
- inotify queue overflows are dropped silently by watchdog, so the periodic rescan is
  the real guarantee; ``check`` restarts a dead observer and asks for a rescan;
- when watches cannot be added (inotify limits), csm falls back to polling rescans and
  says so once.
"""

from __future__ import annotations

import logging
import os
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

from csm.daemon.syncer import Syncer

log = logging.getLogger("csm.watch")

EVENTS = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]


def _str(p: bytes | str) -> str:
    return os.fsdecode(p)


class Hints(FileSystemEventHandler):
    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = _str(event.src_path)
        if event.is_directory:
            if event.event_type == "moved":
                self.syncer.hint_dir(src, _str(event.dest_path))
            elif event.event_type in ("created", "deleted"):
                self.syncer.hint_dir(src)
        elif event.event_type == "moved":
            self.syncer.hint_move(src, _str(event.dest_path))
        elif src.endswith(".jsonl"):
            self.syncer.hint(src)


class Watcher:
    """One recursive observer over every root; ``mode`` says whether it watches or polls."""

    def __init__(self, roots: list[Path], syncer: Syncer, enabled: bool = True, poll_interval_s: float = 2.0) -> None:
        self.roots = roots
        self.poll_interval_s = poll_interval_s
        self.syncer = syncer
        self.enabled = enabled
        self.observer: Observer | None = None  # type: ignore[valid-type]
        self.watched: set[Path] = set()
        self.mode = "watching" if enabled else "polling (watching disabled)"
        self.handler = Hints(syncer)

    def start(self) -> None:
        if not self.enabled:
            self._poll()
            return
        self.observer = Observer()
        self.observer.daemon = True
        self.watched = set()
        self._schedule()
        self.observer.start()

    def _schedule(self) -> None:
        assert self.observer is not None
        for root in self.roots:
            if root in self.watched or not root.is_dir():
                continue
            try:
                self.observer.schedule(self.handler, str(root), recursive=True, event_filter=EVENTS)
                self.watched.add(root)
            except OSError as e:
                self.mode = f"polling ({e.strerror or e}: raise fs.inotify.max_user_watches)"
                log.warning("cannot watch %s: %s; falling back to polling rescans", root, e)
                self.stop()
                self.enabled = False
                self._poll()
                return
            # Files may have appeared before the watch existed.
            self.syncer.hint_dir(str(root))

    def check(self) -> None:
        """Called before each rescan: restart a dead observer, watch roots that appeared."""
        if not self.enabled:
            return
        if self.observer is None or not self.observer.is_alive():
            log.error("file watcher died; restarting it (the rescan recovers missed changes)")
            self.stop()
            self.start()
            return
        self._schedule()

    def _poll(self) -> None:
        self.syncer.rescan_interval_s = min(self.syncer.rescan_interval_s, self.poll_interval_s)

    @property
    def polling(self) -> bool:
        return not self.enabled

    def stop(self) -> None:
        if self.observer is not None:
            try:
                self.observer.stop()
                self.observer.join(timeout=2)
            except RuntimeError:
                pass
            self.observer = None

"""The rescan, the safety net under the watcher's hints, and its backlog (``csm status``, ``csm sync``).

Every file under the roots (or one folder) is compared with its checkpoint: an unchanged file (same
inode, size and mtime) costs one ``stat``; the rest are visited. While it lists files the backlog's
totals grow (``counting``); then files and bytes done move after each visit and after each committed
batch (``committed``, capped at the file's share), so one large file shows progress too. Rate and
ETA come from the bytes done since the listing ended.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from csm.daemon.sinks import Sink
from csm.shared.protocol import Backlog

if TYPE_CHECKING:
    from csm.daemon.batch import Batch
    from csm.daemon.ingest import Ingestor
    from csm.daemon.store import FileRow


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


class Rescan(Sink):
    """Rescans for one ``Ingestor``; a sink only to hear of each committed batch."""

    name = "rescan"

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.backlog: Backlog | None = None
        self.progress: Callable[[], None] | None = None
        self.started = 0.0
        self.file_end = 0
        self.visiting: str | None = None
        """The file the rescan is visiting: only its batches move the backlog (not a hint's, stored meanwhile)."""

    def run(self, progress: Callable[[], None] | None = None, top: Path | None = None) -> Totals:
        """Compare every file under the roots (or ``top``) with its checkpoint and catch up.

        Files whose checkpoints lie under a scanned root but that no longer exist are marked
        gone — never those of other roots; a full rescan also marks gone the files of a root
        deleted whole or no longer configured.
        """
        ing = self.ingestor
        ids = ing.checkpoints
        totals = Totals()
        tops = [top] if top else [r for r in ing.tree.roots if r.is_dir()]
        seen: set[str] = set()
        todo: list[tuple[str, int]] = []
        strangers: list[tuple[str, os.stat_result]] = []
        """Paths whose file is not their checkpoint's: maybe another checkpoint's, moved here."""
        b = self.backlog = Backlog(counting=True)
        self.progress = progress
        for t in tops:
            for path, st in ing.tree.files(t):
                seen.add(path)
                totals.files_scanned += 1
                f = ids.live.get(path)
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
            if not ing.stopping.is_set() and ing.store.with_inode(st.st_dev, st.st_ino):
                ids.claim_at(path)
        # A first sync lists every file as a stranger: 3,000 stat results were 1.9 MB of Python objects
        # (47k) kept through the whole sync, and their freed blocks left Python's heap larger for good.
        strangers.clear()
        try:
            b.counting = False
            self.started = time.monotonic()
            for path, size in todo:
                ing.live_first(None)
                if ing.stopping.is_set():
                    break
                self.file_end = b.bytes_done + size
                self.visiting = path
                visited = ing.visit(path)
                visited.files_scanned = 0  # counted above
                totals += visited
                b.files_done += 1
                b.bytes_done = self.file_end
                self._tick()
        finally:
            self.backlog = self.progress = self.visiting = None
        # Files not seen are gone when they no longer exist — under a root deleted whole too — and, after
        # a full rescan, when no configured root holds them any more: csm no longer follows those.
        prefixes = [str(t) + os.sep for t in (ing.tree.roots if top is None else tops)]
        for path, f in list(ids.live.items()):
            if f.gone_at or path in seen:
                continue
            if not any(path.startswith(p) for p in prefixes):
                if top is None:
                    ids.mark_gone(f, "not under a configured root")
            elif not os.path.lexists(path):
                ids.mark_gone(f)
        return totals

    def committed(self, batches: Sequence[tuple[FileRow, Batch]]) -> None:
        """Move the backlog by the committed batches, within the current file's share of the total."""
        b = self.backlog
        if b is not None and not b.counting:
            done = sum(batch.end - batch.start for f, batch in batches if f.path == self.visiting)
            b.bytes_done = min(b.bytes_done + done, self.file_end)
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

"""What the ingest thread keeps current besides the rows, each with the same small life.

A sink is told, on the ingest thread:

- ``prepare(store)``: once, before the first rescan (bring what it keeps up to date with this csm:
  reprice usage, index lines stored before the search index existed);
- ``add(row, f, view)``: each newly inserted line, with the view the ingest thread decoded (the only
  decode of that line); ``add`` takes the whole line or raises having taken none of it, and the line
  is then stored without this sink's data, the error recorded against it as ``name`` (``line_errors``);
- ``write(store)``: once per transaction, inside it, for every batch it holds (one file's batch, or a
  round of hinted files' batches: ``Ingestor.visit_together``); ``clear()``: after every transaction,
  whether it committed, rolled back or never began, so nothing a sink holds outlives it;
- ``committed(batches)``: after the commit, once, with each (file, batch) it held (``csm watch``, the
  WAL checkpoint, a rescan's progress, the team mirror's wake); it can fail only itself;
- ``idle(store, stop)``: after each round of work, for work left for later; it returns as soon as
  ``stop()`` says new work waits.

Re-attached lines (a re-read of an unchanged line) are not added again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from csm.daemon.batch import Batch, EventRow
    from csm.daemon.parse import LineView
    from csm.daemon.store import FileRow, Store


class Sink:
    """A sink that does nothing at any step; each sink overrides the steps it needs."""

    name = "sink"

    def prepare(self, store: Store) -> None:
        pass

    def add(self, row: EventRow, f: FileRow, view: LineView) -> None:
        pass

    def write(self, store: Store) -> None:
        pass

    def clear(self) -> None:
        pass

    def committed(self, batches: Sequence[tuple[FileRow, Batch]]) -> None:
        pass

    def idle(self, store: Store, stop: Callable[[], bool]) -> None:
        pass


class OnCommit(Sink):
    """A sink that only wakes something after each commit (the team mirror's thread)."""

    def __init__(self, name: str, wake: Callable[[], None]) -> None:
        self.name = name
        self.wake = wake

    def committed(self, batches: Sequence[tuple[FileRow, Batch]]) -> None:
        self.wake()

"""Quiet sessions' lines stored compressed, and the one way every reader gets a line's text back.

Why: the archive outlives Claude Code's 30-day cleanup, so it only grows, and the lines' raw text
is most of it. A file unchanged for ``compress_after_days`` has its rows' ``raw`` replaced by
``zraw``: the line compressed with zstd and a dictionary trained on the user's own lines (per line
~25 % of the bytes on the real fixtures, read back at ~200 MB/s through the SQL function; per block
of lines would keep ~17 % but every reader of one line would pay for the block). Dictionaries live
in ``raw_dictionaries`` with an id that each row names, and are never changed, so rows compressed
with an old one stay readable when a newer one is trained (``RETRAIN_FACTOR``).

Reading is ``daemon/rawtext.py``'s: every reader takes a row's text through ``rawtext.RAW``.

Writing: ``Compressor`` is an ingest sink whose ``idle`` step does it between the ingest thread's jobs: bounded
transactions of ``BATCH_ROWS`` rows and ``BATCH_BYTES`` of lines, stopping as soon as a hint waits. A batch's
rows are deleted and inserted again compressed (same id, offset and generation, so appends, re-reads and every
derived table are untouched): rewritten in place, each row would leave its b-tree page two-thirds empty, and
only wholly free pages go back to the file system (``daemon/space.py``); deleted, their pages are merged and
freed, and the compressed rows are packed into few. A kill leaves each row either plain or compressed, never
both or neither. Rows an earlier csm compressed in place are rewritten the same way once (``compress_rewrite``,
migration 11), newest first. A dictionary is trained on a thread of its own (0.5-3 s here, the GIL released)
while the ingest thread keeps answering hints.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import zstandard

from csm.daemon.rawtext import RAW
from csm.daemon.sinks import Sink
from csm.daemon.store import PAGE_SIZE, Store, now_iso

log = logging.getLogger("csm.compress")

BATCH_ROWS = 64
"""Rows per transaction at most: a hint waits for at most one batch (at 256 rows and 1 MB, freshness p99
while compressing was 632 ms against 175 ms without, at load 20)."""
BATCH_BYTES = 256 << 10
"""Lines read for one transaction at most (each is held compressed until the commit)."""
COLUMNS = "id, file_id, generation, line_offset, session_id, uuid, parent_uuid, type, timestamp"
"""The columns a rewritten row keeps as they were (``raw``, ``zraw`` and ``dict_id`` are set)."""
MAX_LINE_BYTES = 1 << 20
"""Longer lines stay plain: reading one back would hold it twice in csmd's memory."""
DICT_BYTES = 112_640
"""zstd's default dictionary size."""
SAMPLES = 500
"""Lines a dictionary is trained on (about 1 MB): training holds ~4x its samples (2,000 real lines, 3.7 MB:
+15 MB of RSS), so few are taken, each under ``SAMPLE_MAX_BYTES``."""
SAMPLE_MAX_BYTES = 16384
MIN_SAMPLES = 100
"""Fewer lines than this train no dictionary: rows are compressed without one."""
RETRAIN_FACTOR = 4
"""A new dictionary is trained once the archive holds this many times the lines the last one saw."""
LEVEL = 3
WAIT_S = 0.01
"""How often the ingest thread, waiting for a dictionary, looks for hints."""
PAGES_PER_BATCH = 16
"""Pages a batch rewrites besides its lines' own (b-tree interior pages, the free list)."""


class Compressor(Sink):
    """Compress the rows of quiet files, as the ingest thread's idle work. Each batch's pages are
    counted to the checkpoint thread (``wrote``), so it checkpoints and, once idle, empties the WAL
    that compression filled."""

    name = "compress"

    def __init__(self, store: Store, after_days: float, wrote: Callable[[int], None]) -> None:
        self.store = store
        self.after_days = after_days
        self.wrote = wrote
        self.dict_id: int | None = None
        self.compressor = zstandard.ZstdCompressor(level=LEVEL)
        self.trained_on = 0
        self.training: threading.Thread | None = None
        self.trained: tuple[int, int, bytes] | None = None
        """(lines, samples, dictionary) from the training thread, to store and use."""
        row = store.conn.execute(
            "SELECT id, dict, lines FROM raw_dictionaries ORDER BY id DESC LIMIT 1").fetchone()
        if row is not None:
            self._use(row[0], row[1], row[2])

    def _use(self, dict_id: int, data: bytes, lines: int) -> None:
        self.dict_id, self.trained_on = dict_id, lines
        self.compressor = zstandard.ZstdCompressor(level=LEVEL, dict_data=zstandard.ZstdCompressionDict(data))

    def idle(self, store: Store, stop: Callable[[], bool]) -> None:
        self.run(stop)

    def run(self, busy: Callable[[], bool]) -> int:
        """Compress quiet files' plain rows until none is left or ``busy()``, after rewriting those compressed in
        place; the rows compressed."""
        self._rewrite_earlier(busy)
        done = 0
        quiet_before = time.time_ns() - int(self.after_days * 86400e9)
        # Through events_plain (migration 11): only plain rows are read, never a file's compressed ones.
        files = [r[0] for r in self.store.conn.execute(
            "SELECT m.file_id FROM sync_metadata m WHERE m.mtime_ns <= ? AND EXISTS (SELECT 1 FROM events e "
            "INDEXED BY events_plain WHERE e.file_id = m.file_id AND e.zraw IS NULL)", (quiet_before,))]
        for file_id in files:
            after = 0
            while not busy():
                cur = self.store.conn.execute(
                    f"SELECT {COLUMNS}, CAST(raw AS BLOB) FROM events INDEXED BY events_plain WHERE file_id = ? "
                    "AND zraw IS NULL AND id > ? AND length(CAST(raw AS BLOB)) <= ? ORDER BY id LIMIT ?",
                    (file_id, after, MAX_LINE_BYTES, BATCH_ROWS))
                if not self._dictionary_ready(busy):
                    cur.close()
                    return done
                rows, read = self._compressed(cur)
                if not rows:
                    break
                self._replace(rows, read)
                after = rows[-1][0]  # past the lines too long to compress, which stay plain
                done += len(rows)
            if busy():
                break
        if done:
            log.info("compressed %d lines of quiet sessions", done)
        return done

    def _rewrite_earlier(self, busy: Callable[[], bool]) -> None:
        """Rewrite the rows an earlier csm compressed in place into fresh pages, newest first, a batch per
        transaction, the progress (``compress_rewrite.below``) committed with each batch."""
        q = self.store.conn.execute
        done = 0
        while not busy() and (below := q("SELECT below FROM compress_rewrite").fetchone()[0]):
            rows = q(f"SELECT {COLUMNS}, zraw, dict_id FROM events WHERE id < ? AND zraw IS NOT NULL "
                     "ORDER BY id DESC LIMIT ?", (below, BATCH_ROWS)).fetchall()
            self._replace(rows, sum(len(r[-2]) for r in rows), below=rows[-1][0] if rows else 0)
            done += len(rows)
        if done:
            log.info("rewrote %d lines compressed by an earlier csm into fresh pages", done)

    def _compressed(self, cur: sqlite3.Cursor) -> tuple[list[tuple[Any, ...]], int]:
        """The rows of ``cur`` (``COLUMNS`` and the line) compressed, read until ``BATCH_BYTES`` of lines; the
        line bytes read."""
        rows: list[tuple[Any, ...]] = []
        read = 0
        try:
            for *cols, raw in cur:
                rows.append((*cols, self.compressor.compress(raw), self.dict_id))
                read += len(raw)
                if read >= BATCH_BYTES:
                    break
        finally:
            cur.close()
        return rows, read

    def _replace(self, rows: list[tuple[Any, ...]], read: int, below: int | None = None) -> None:
        """One transaction: ``rows`` (``COLUMNS``, zraw, dict_id) deleted and inserted again, compressed (and
        the earlier rows' rewrite moved to ``below``)."""
        with self.store.transaction() as conn:
            conn.executemany("DELETE FROM events WHERE id = ?", [(r[0],) for r in rows])
            conn.executemany(f"INSERT INTO events ({COLUMNS}, raw, zraw, dict_id) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?)", rows)
            if below is not None:
                conn.execute("UPDATE compress_rewrite SET below = ?", (below,))
        self.wrote(PAGES_PER_BATCH + 2 * read // PAGE_SIZE)

    def _dictionary_ready(self, busy: Callable[[], bool]) -> bool:
        """Whether the dictionary to compress with is settled: none due, or the one due trained and stored.

        Training takes 0.5-3 s here and releases the GIL, so it runs on a thread of its own while the ingest
        thread waits for it in steps of ``WAIT_S``, going back to its hints as soon as one waits (False: the
        next idle round waits on)."""
        if self.training is None:
            self._start_training()
        if self.training is not None:
            while self.training.is_alive():
                if busy():
                    return False
                self.training.join(WAIT_S)
            self.training = None
            if self.trained is not None:
                self._store(*self.trained)
                self.trained = None
        return True

    def _start_training(self) -> None:
        """Start training the first dictionary, or a new one once the archive has grown ``RETRAIN_FACTOR``
        times, from ``SAMPLES`` lines picked at random."""
        q = self.store.conn.execute
        lines = q("SELECT max(id) FROM events").fetchone()[0] or 0
        if lines < MIN_SAMPLES or lines < RETRAIN_FACTOR * self.trained_on:
            return
        self.trained_on = lines  # a failed attempt too waits for the archive to grow as much again
        ids = random.Random(lines).sample(range(1, lines + 1), min(SAMPLES, lines))
        samples = [r[0] for r in q(
            f"SELECT CAST({RAW} AS BLOB) FROM events e WHERE e.id IN (SELECT value FROM json_each(?)) "
            f"AND length(CAST(COALESCE(e.zraw, e.raw) AS BLOB)) < {SAMPLE_MAX_BYTES}", (str(ids).replace(" ", ""),))]
        if len(samples) < MIN_SAMPLES:
            return
        self.training = threading.Thread(target=self._train, args=(lines, samples), name="csm-train", daemon=True)
        self.training.start()

    def _train(self, lines: int, samples: list[bytes]) -> None:
        """On the training thread: the dictionary's bytes into ``trained``, or nothing if zstd cannot make one."""
        try:
            self.trained = (lines, len(samples), zstandard.train_dictionary(DICT_BYTES, samples).as_bytes())
        except zstandard.ZstdError as e:  # too few distinct samples: keep the dictionary in use
            log.info("no new compression dictionary: %s", e)

    def _store(self, lines: int, samples: int, data: bytes) -> None:
        with self.store.transaction() as conn:
            dict_id = conn.execute("INSERT INTO raw_dictionaries (trained_at, lines, dict) VALUES (?, ?, ?)",
                                   (now_iso(), lines, data)).lastrowid
        assert dict_id is not None
        self._use(dict_id, data, lines)
        log.info("trained compression dictionary %d on %d lines (%d KB)", dict_id, samples, len(data) >> 10)

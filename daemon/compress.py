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
transactions of ``BATCH_ROWS`` rows, stopping as soon as a hint waits; a row is rewritten in place
(same id, offset and generation), so appends, re-reads and every derived table are untouched, and a
kill leaves each row either plain or compressed, never both or neither.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import zstandard

from csm.daemon.rawtext import RAW
from csm.daemon.sinks import Sink
from csm.daemon.store import PAGE_SIZE, Store, now_iso

log = logging.getLogger("csm.compress")

BATCH_ROWS = 256
"""Rows per transaction: about 0.5 MB of lines, a few ms of the writer."""
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
        """Compress quiet files' plain rows until none is left or ``busy()``; the rows compressed."""
        done = 0
        quiet_before = time.time_ns() - int(self.after_days * 86400e9)
        files = [r[0] for r in self.store.conn.execute(
            "SELECT file_id FROM sync_metadata WHERE mtime_ns <= ?", (quiet_before,))]
        for file_id in files:
            while not busy():
                rows = self.store.conn.execute(
                    "SELECT id, CAST(raw AS BLOB) FROM events WHERE file_id = ? AND zraw IS NULL "
                    "AND length(CAST(raw AS BLOB)) <= ? LIMIT ?", (file_id, MAX_LINE_BYTES, BATCH_ROWS)).fetchall()
                if not rows:
                    break
                self._maybe_train()
                with self.store.transaction() as conn:
                    conn.executemany("UPDATE events SET raw = '', zraw = ?, dict_id = ? WHERE id = ? AND zraw IS NULL",
                                     [(self.compressor.compress(raw), self.dict_id, i) for i, raw in rows])
                self.wrote(PAGES_PER_BATCH + sum(len(raw) for _, raw in rows) // PAGE_SIZE)
                done += len(rows)
            if busy():
                break
        if done:
            log.info("compressed %d lines of quiet sessions", done)
        return done

    def _maybe_train(self) -> None:
        """Train the first dictionary, or a new one once the archive has grown ``RETRAIN_FACTOR`` times."""
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
        try:
            data = zstandard.train_dictionary(DICT_BYTES, samples).as_bytes()
        except zstandard.ZstdError as e:  # too few distinct samples: keep the dictionary in use
            log.info("no new compression dictionary: %s", e)
            return
        with self.store.transaction() as conn:
            dict_id = conn.execute("INSERT INTO raw_dictionaries (trained_at, lines, dict) VALUES (?, ?, ?)",
                                   (now_iso(), lines, data)).lastrowid
        assert dict_id is not None
        self._use(dict_id, data, lines)
        log.info("trained compression dictionary %d on %d lines (%d KB)", dict_id, len(samples), len(data) >> 10)

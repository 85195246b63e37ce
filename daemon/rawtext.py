"""A row's text, compressed or not: the one accessor every reader of ``events.raw`` goes through.

``RAW`` is the SQL expression for a row's text on ``events e``: ``raw`` itself for a plain row (so a
long uncompressed line never passes through Python), else ``csm_raw(zraw, dict_id)``, the function
``register`` adds to every connection csm opens (the writer, the readers, the team mirror's).

The public ``lines`` view (any SQLite tool) shows ``raw`` as stored ('' for a compressed line) beside
``zraw`` and ``dict_id``; ``shadow_lines`` gives a reader connection a temporary view of the same name
whose ``raw`` is the text, so ``csm query sql`` reads every line as before and outside tools still work;
its ``events`` are the reader's own (main and the archives, ``daemon/attach.py``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import zstandard

RAW = "CASE WHEN e.zraw IS NULL THEN e.raw ELSE csm_raw(e.zraw, e.dict_id) END"
"""A row's text, for SQL on ``events e``: the one way every reader reads a line."""
RAW_BYTES = "CASE WHEN e.zraw IS NULL THEN CAST(e.raw AS BLOB) ELSE csm_raw_bytes(e.zraw, e.dict_id) END"
"""The same as UTF-8 bytes, for a reader that only copies lines out (``export``): a compressed line is not
decoded to a str and encoded back (a third of an export's time)."""


def register(conn: sqlite3.Connection, db: Path | str) -> sqlite3.Connection:
    """Add ``csm_raw(zraw, dict_id)`` to ``conn``; dictionaries are read from ``db`` once each, on their own
    connection (a function may not query the connection that calls it)."""
    reader = _Reader(db)
    conn.create_function("csm_raw", 2, reader, deterministic=True)
    conn.create_function("csm_raw_bytes", 2, reader.raw_bytes, deterministic=True)
    return conn


LINES = f"""
CREATE TEMP VIEW IF NOT EXISTS lines AS
SELECT m.file_path, e.line_offset, e.uuid, e.parent_uuid, e.session_id, e.type, e.timestamp,
       {RAW} AS raw, e.generation, e.generation = m.generation AS current, e.zraw, e.dict_id
FROM events e JOIN main.sync_metadata m ON m.file_id = e.file_id
"""


def shadow_lines(conn: sqlite3.Connection) -> None:
    """Give ``conn`` the ``lines`` view with every line's text (before it is made query-only)."""
    conn.execute(LINES)


class _Reader:
    """One connection's decompressors (not shared: a zstd context serves one thread at a time)."""

    def __init__(self, db: Path | str) -> None:
        self.db = db
        self.by_id: dict[int | None, zstandard.ZstdDecompressor] = {None: zstandard.ZstdDecompressor()}

    def __call__(self, zraw: bytes | None, dict_id: int | None) -> str | None:
        data = self.raw_bytes(zraw, dict_id)
        return None if data is None else data.decode()

    def raw_bytes(self, zraw: bytes | None, dict_id: int | None) -> bytes | None:
        if zraw is None:
            return None
        d = self.by_id.get(dict_id)
        if d is None:
            d = self._load(dict_id)
        return d.decompress(zraw)

    def _load(self, dict_id: int | None) -> zstandard.ZstdDecompressor:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT dict FROM raw_dictionaries WHERE id = ?", (dict_id,)).fetchone()
        finally:
            conn.close()
        if row is None:
            raise ValueError(f"a compressed line names dictionary {dict_id}, which raw_dictionaries lacks")
        d = self.by_id[dict_id] = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(row[0]))
        return d

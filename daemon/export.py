"""Streaming a session or a file back out of the archive, in chunks over the control socket.

The rows of a file's current generation, in offset order, each followed by ``\\n`` (but a
final line stored without one), are the file's lines byte for byte (the lossless rule; see
ARCHITECTURE.md). One SELECT reads them all, so the export is one consistent snapshot even
while csmd keeps ingesting, and its cursor is drained in chunks so memory stays bounded
whatever the file's size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

from csm.daemon import browse
from csm.shared.errors import NotFound, QueryError
from csm.shared.protocol import Chunk, Export, ExportDone, Message

CHUNK_BYTES = 1 << 20
FORMATS = ("jsonl",)


def resolve(conn: sqlite3.Connection, target: str) -> list[tuple[int, str]]:
    """(file_id, path) of the file ``target`` names: a file path, or a session as ``csm query show`` takes it."""
    if target.startswith("/"):
        # A path names the file there now, else the one last seen there (a gone checkpoint keeps its path).
        rows = conn.execute("SELECT file_id, file_path FROM sync_metadata WHERE file_path = ? "
                            "ORDER BY gone_at IS NOT NULL, gone_at DESC LIMIT 1", (target,)).fetchall()
        if not rows:
            raise NotFound(f"no transcript file {target} in the archive (csm query sql \"SELECT file_path FROM "
                           "sync_metadata\" lists them)")
        return rows
    file_id = browse.resolve(conn, target)  # the one rule for session ids and prefixes
    return conn.execute("SELECT file_id, file_path FROM sync_metadata WHERE file_id = ?", (file_id,)).fetchall()


def _raw_lines(conn: sqlite3.Connection, file_ids: list[int]) -> Iterator[tuple[bytes, bool]]:
    """Each row's bytes, and whether it is a file's final line stored without a newline (it ends
    where the checkpoint is: a line that had its newline ends one byte before)."""
    marks = ",".join("?" * len(file_ids))
    cur = conn.execute(
        "SELECT e.raw, e.line_offset, m.last_position FROM events e "
        "JOIN sync_metadata m ON m.file_id = e.file_id AND e.generation = m.generation "
        f"WHERE m.file_id IN ({marks}) ORDER BY m.file_path, e.line_offset",
        file_ids,
    )
    for raw, offset, end in cur:
        data = raw.encode("utf-8")
        yield data, offset + len(data) == end


def run(conn: sqlite3.Connection, request: Export, reply: Callable[[Message], None]) -> ExportDone:
    """Send the ``Chunk``s through ``reply`` and return the final ``ExportDone``; raises ``CsmError``
    before the first chunk if it cannot.

    A file whose final line was stored without a newline is given back without one, byte for byte."""
    if request.format not in FORMATS:
        raise QueryError(f"unknown export format {request.format!r}; known: {', '.join(FORMATS)}")
    files = resolve(conn, request.target)
    buf: list[bytes] = []
    size = lines = total = seq = 0
    for data, unterminated in _raw_lines(conn, [f for f, _ in files]):
        buf.append(data)
        if not unterminated:
            buf.append(b"\n")
        size += len(data) + (not unterminated)
        lines += 1
        if size >= CHUNK_BYTES:
            reply(Chunk(seq=seq, data=b"".join(buf)))
            seq += 1
            total += size
            buf, size = [], 0
    if buf:
        reply(Chunk(seq=seq, data=b"".join(buf)))
        seq += 1
        total += size
    return ExportDone(files=[p for _, p in files], lines=lines, bytes=total, chunks=seq)

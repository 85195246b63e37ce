"""Streaming a session (and its subagents) or a file back out of the archive, in chunks over the control socket.

The rows of a file's current generation, in offset order, each followed by ``\\n`` (but a
final line stored without one), are the file's lines byte for byte (the lossless rule; see
ARCHITECTURE.md). One read transaction covers all the files, so the export is one consistent
snapshot even while csmd keeps ingesting, and each file's cursor is drained in chunks so memory
stays bounded whatever the file's size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

from csm.daemon import browse
from csm.shared.errors import NotFound, QueryError
from csm.shared.protocol import Chunk, Export, ExportDone, ExportFile, Message

CHUNK_BYTES = 1 << 20
FORMATS = ("jsonl",)


def resolve(conn: sqlite3.Connection, target: str, subagents: bool = False) -> list[tuple[int, str]]:
    """(file_id, path) of the file ``target`` names: a file path, or a session as ``csm query show`` takes it;
    with ``subagents``, then the files of that session's subagents."""
    if target.startswith("/"):
        # A path names the file there now, else the one last seen there (a gone checkpoint keeps its path).
        rows = conn.execute("SELECT file_id, file_path FROM sync_metadata WHERE file_path = ? "
                            "ORDER BY gone_at IS NOT NULL, gone_at DESC LIMIT 1", (target,)).fetchall()
        if not rows:
            raise NotFound(f"no transcript file {target} in the archive (csm query sql \"SELECT file_path FROM "
                           "sync_metadata\" lists them)")
    else:
        file_id = browse.resolve(conn, target)  # the one rule for session ids and prefixes
        rows = conn.execute("SELECT file_id, file_path FROM sync_metadata WHERE file_id = ?", (file_id,)).fetchall()
    return rows + browse.subagent_files(conn, rows[0][0]) if subagents else rows


def _raw_lines(conn: sqlite3.Connection, file_id: int) -> Iterator[tuple[bytes, bool]]:
    """Each row's bytes, and whether it is a file's final line stored without a newline (it ends
    where the checkpoint is: a line that had its newline ends one byte before)."""
    cur = conn.execute(
        "SELECT e.raw, e.line_offset, m.last_position FROM events e "
        "JOIN sync_metadata m ON m.file_id = e.file_id AND e.generation = m.generation "
        "WHERE m.file_id = ? ORDER BY e.line_offset",
        (file_id,),
    )
    for raw, offset, end in cur:
        data = raw.encode("utf-8")
        yield data, offset + len(data) == end


def run(conn: sqlite3.Connection, request: Export, reply: Callable[[Message], None]) -> ExportDone:
    """Send an ``ExportFile`` and its ``Chunk``s for each file through ``reply`` and return the final
    ``ExportDone``; raises ``CsmError`` before the first chunk if it cannot.

    A file whose final line was stored without a newline is given back without one, byte for byte.
    The files are read in one transaction: one consistent snapshot while csmd keeps ingesting."""
    if request.format not in FORMATS:
        raise QueryError(f"unknown export format {request.format!r}; known: {', '.join(FORMATS)}")
    conn.execute("BEGIN")
    try:
        files = resolve(conn, request.target, request.subagents)
        lines = total = seq = 0
        for file_id, path in files:
            reply(ExportFile(path=path))
            buf: list[bytes] = []
            size = 0
            for data, unterminated in _raw_lines(conn, file_id):
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
    finally:
        conn.execute("COMMIT")
    return ExportDone(files=[p for _, p in files], lines=lines, bytes=total, chunks=seq)

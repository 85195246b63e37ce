"""Streaming a session (and its subagents) or a file back out of the archive, in chunks over the control socket.

The rows of a file's current generation, in offset order, each followed by ``\\n`` (but a
final line stored without one), are the file's lines byte for byte (the lossless rule; see
ARCHITECTURE.md). One read transaction covers all the files, so the export is one consistent
snapshot even while csmd keeps ingesting, and each file's cursor is drained in chunks so memory
stays bounded whatever the file's size. The client acknowledges each chunk it has written and
csmd stays at most ``WINDOW`` chunks ahead, so a client that stops reading (Ctrl-Z, a stalled
pipe) holds up its export, not csmd's memory.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from csm.daemon import attach, browse
from csm.daemon.rawtext import RAW_BYTES
from csm.daemon.server import Envelope, Replier, Server
from csm.shared.errors import NotFound, QueryError
from csm.shared.protocol import Chunk, Export, ExportDone, ExportFile, Heartbeat, Message

log = logging.getLogger("csm.export")
M = TypeVar("M", bound=Message)

CHUNK_BYTES = 1 << 18
WINDOW = 16
"""Chunks sent ahead of the client's last ``Ack``: all a client that stops reading can make csmd hold (4 MB).
Many small chunks rather than a few large ones: the stream stalls only when the whole window waits for
acknowledgements, and each chunk costs csmd less (a 50 MB export: 0.32-0.38 s of csmd's CPU at 256 KB x 16,
0.47-0.56 s at 1 MB x 4; bench/RESULTS.md)."""
PROBE_S = 2.0
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


def _pieces(conn: sqlite3.Connection, file_id: int) -> Iterator[tuple[bytes, int]]:
    """The file's bytes in pieces of about ``CHUNK_BYTES`` (and the lines in each): every line followed by
    its newline, but a final line stored without one (it ends where the checkpoint is). Rows come straight
    from SQLite as bytes (``RAW_BYTES``: no str made and encoded again; lines reach 10 MB) and are joined a
    piece at a time, so the Python work per line is a list item (per-line appends to a buffer were a third
    of an export's CPU). Held: a piece and the line that ends it."""
    end = conn.execute("SELECT last_position FROM sync_metadata WHERE file_id = ?", (file_id,)).fetchone()[0]
    attach.readable(conn, file_id)
    # e.file_id too: SQLite then seeks each file of ``events`` (main and archives) and merges them in order
    cur = conn.execute(
        f"SELECT {RAW_BYTES}, e.line_offset FROM events e "
        "JOIN sync_metadata m ON m.file_id = e.file_id AND e.generation = m.generation "
        "WHERE m.file_id = ? AND e.file_id = ? ORDER BY e.line_offset",
        (file_id, file_id),
    )
    lines: list[bytes] = []
    held = 0
    for data, offset in cur:
        lines.append(data)
        held += len(data)
        if held >= CHUNK_BYTES:
            yield _joined(lines, offset + len(data) == end)
            lines, held = [], 0
    if lines:
        yield _joined(lines, offset + len(data) == end)


def _joined(lines: list[bytes], unterminated: bool) -> tuple[bytes, int]:
    """``lines`` each with its newline, the last one without if it was stored ``unterminated``; their count."""
    n = len(lines)
    if not unterminated:
        lines.append(b"")
    return b"\n".join(lines), n


class ClientGone(Exception):
    """The client of an export went away before it ended."""


class Flow:
    """One export's credit: the last chunk its client acknowledged (``Ack``)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.acked = -1
        self.gone = False

    def ack(self, seq: int) -> None:
        with self.cond:
            self.acked = max(self.acked, seq)
            self.cond.notify()

    def lost(self) -> None:
        with self.cond:
            self.gone = True
            self.cond.notify()

    def wait(self, seq: int, probe: Callable[[], None]) -> None:
        """Return once chunk ``seq`` may be sent. While waiting, ``probe`` every ``PROBE_S``: sending to a
        client that went away fails, which ends the export (``lost``), and a live one knows csmd is there."""
        with self.cond:
            while seq - self.acked > WINDOW and not self.gone:
                if not self.cond.wait(PROBE_S):
                    probe()
            if self.gone:
                raise ClientGone


class Exports:
    """The exports in progress, by client, so that acknowledgements and lost clients reach them.

    Each export runs on a thread of its own: one whose client is stopped waits for it, for as
    long as it takes, holding its read snapshot, a connection and at most ``WINDOW`` chunks,
    never a thread of the query pool.
    """

    def __init__(self, server: Server) -> None:
        self.lock = threading.Lock()
        self.flows: dict[bytes, Flow] = {}
        server.dropped.append(self.dropped)

    def ack(self, envelope: Envelope, seq: int) -> None:
        """A client's ``Ack`` (main thread)."""
        with self.lock:
            flow = self.flows.get(envelope[0])
        if flow is not None:
            flow.ack(seq)

    def dropped(self, envelope: Envelope, err: int) -> None:
        """A send to this client failed (main thread): one that went away ends its export."""
        if err == errno.EHOSTUNREACH:
            with self.lock:
                flow = self.flows.get(envelope[0])
            if flow is not None:
                flow.lost()

    def stop(self) -> None:
        with self.lock:
            flows = list(self.flows.values())
        for flow in flows:
            flow.lost()

    def run(self, conn: sqlite3.Connection, request: Export, reply: Replier) -> ExportDone | None:
        """Stream the export to ``reply``'s client; None (nothing to reply) if it went away."""
        return self.serve(reply, lambda flow: run(conn, request, reply, flow), f"export of {request.target}")

    def serve(self, reply: Replier, work: Callable[[Flow], M], what: str) -> M | None:
        """Run ``work``, a stream to ``reply``'s client, with the ``Flow`` its acknowledgements reach (an
        export, a whole conversation); None (nothing to reply) if the client went away."""
        flow = Flow()
        with self.lock:
            self.flows[reply.envelope[0]] = flow
        try:
            return work(flow)
        except ClientGone:
            log.info("%s: the client went away", what)
            return None
        finally:
            with self.lock:
                self.flows.pop(reply.envelope[0], None)


def run(conn: sqlite3.Connection, request: Export, reply: Callable[[Message], None], flow: Flow) -> ExportDone:
    """Send an ``ExportFile`` and its ``Chunk``s for each file through ``reply`` as ``flow`` allows and
    return the final ``ExportDone``; raises ``CsmError`` before the first chunk if it cannot.

    Chunks are ``CHUNK_BYTES`` exactly (the last of a file less), cut wherever that falls, even inside
    a line, never across files: the client only appends them, and a 50 MB line then costs csmd no
    50 MB message. A file whose final line was stored without a newline is given back without one,
    byte for byte. The files are read in one transaction: one consistent snapshot.
    """
    if request.format not in FORMATS:
        raise QueryError(f"unknown export format {request.format!r}; known: {', '.join(FORMATS)}")
    lines = total = seq = 0

    def send(data: bytes) -> None:
        nonlocal seq, total
        flow.wait(seq, lambda: reply(Heartbeat()))
        reply(Chunk(seq=seq, data=data))
        seq += 1
        total += len(data)

    conn.execute("BEGIN")
    try:
        files = resolve(conn, request.target, request.subagents)
        for file_id, path in files:
            reply(ExportFile(path=path))
            buf = bytearray()
            for piece, n in _pieces(conn, file_id):
                buf += piece
                lines += n
                while len(buf) >= CHUNK_BYTES:
                    with memoryview(buf) as view:
                        data = bytes(view[:CHUNK_BYTES])
                    del buf[:CHUNK_BYTES]
                    send(data)
            if buf:
                send(bytes(buf))
    finally:
        conn.execute("COMMIT")
    return ExportDone(files=[p for _, p in files], lines=lines, bytes=total, chunks=seq)

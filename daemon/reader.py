"""Reading a transcript file: whole lines only, and the fingerprints that identify it.

Everything here works on an open file descriptor with ``pread`` so that a file that
is renamed, truncated or replaced while it is being read is still read consistently
(the descriptor keeps pointing at the inode that was checked).
"""

from __future__ import annotations

import hashlib
import os

HEAD_LEN = 1024
"""Bytes hashed to recognise a file by its beginning (a replacement changes them)."""
TAIL_LEN = 64
"""Bytes hashed just before the committed offset (a truncation that regrew changes them)."""
READ_STEP = 1 << 20


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def head(fd: int, size: int) -> tuple[int, bytes]:
    """(length, hash) of the file's first bytes, up to ``HEAD_LEN``."""
    n = min(size, HEAD_LEN)
    return n, digest(os.pread(fd, n, 0))


def head_matches(fd: int, length: int, expected: bytes | None) -> bool:
    if expected is None or length == 0:
        return True
    data = os.pread(fd, length, 0)
    return len(data) == length and digest(data) == expected


def tail(fd: int, offset: int) -> bytes | None:
    """Hash of the bytes just before ``offset``; None at the start of the file."""
    if offset <= 0:
        return None
    start = max(0, offset - TAIL_LEN)
    return digest(os.pread(fd, offset - start, start))


class LineTooLong(Exception):
    """The line at the read offset is longer than the limit: ``head`` is its start, ``end`` the offset
    just after its newline (None while that has not arrived)."""

    def __init__(self, head: bytes, end: int | None) -> None:
        super().__init__(f"line longer than the limit (ends at {end})")
        self.head = head
        self.end = end


def read_complete(fd: int, offset: int, want: int, max_line: int | None = None) -> bytes:
    """Read from ``offset`` about ``want`` bytes and return them up to the last ``\n``.

    When there is no newline within ``want`` bytes (one very long line), it keeps
    reading until one arrives or the file ends: a line is never cut, however long,
    up to ``max_line`` bytes (if given); the first line beyond that raises ``LineTooLong``
    without being held in memory (lines before it are returned first).
    Bytes after the last newline (a line still being written) are left for later.
    """
    chunks: list[bytes] = []
    pos = line_start = offset
    while True:
        data = os.pread(fd, max(want - (pos - offset), READ_STEP), pos)
        if not data:
            break
        chunks.append(data)
        nl = data.rfind(b"\n")
        pos += len(data)
        if nl >= 0:
            line_start = pos - len(data) + nl + 1
            if pos - offset >= want:
                break
        elif max_line is not None and pos - line_start > max_line:
            if line_start > offset:
                break  # the complete lines first; the long one starts the next read
            raise LineTooLong(chunks[0][:256], _next_line(fd, pos))
    buf = b"".join(chunks) if len(chunks) != 1 else chunks[0]
    cut = buf.rfind(b"\n")
    return buf[: cut + 1] if cut >= 0 else b""


def _next_line(fd: int, pos: int) -> int | None:
    """The offset just after the next ``\n`` at or after ``pos``, reading a step at a time."""
    while True:
        data = os.pread(fd, READ_STEP, pos)
        if not data:
            return None
        nl = data.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(data)

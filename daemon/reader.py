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
    """Read from ``offset`` about ``want`` bytes and return them up to the last ``\\n``.

    When there is no newline within ``want`` bytes (one very long line), the line's end is
    found by scanning ahead without keeping the bytes, and the line is then read whole: a
    line is never cut, however long, up to ``max_line`` bytes (if given); a longer one raises
    ``LineTooLong`` without ever being held in memory. Bytes after the last newline (a line
    still being written) are left for later.
    Bytes after the last newline (a line still being written) are left for later.
    When not even one line ends within ``want`` bytes, the line's end is looked for
    first, without keeping what is scanned, and the whole line is then read at once:
    a line is never cut, and a line over ``max_line`` is never held in memory
    (``LineTooLong`` says how long it is).
    """
    data = os.pread(fd, want, offset)
    cut = data.rfind(b"\n")
    if cut >= 0:
        return data if cut == len(data) - 1 else data[: cut + 1]
    if len(data) < want:
        return b""  # the file ends inside a line still being written
    end = _next_line(fd, offset + len(data))
    if end is None:
        return b""  # the long line is not complete yet
    if max_line is not None and end - 1 - offset > max_line:
        raise LineTooLong(data[:256], end)
    line = os.pread(fd, end - offset, offset)
    return line if line.endswith(b"\n") else b""  # changed under us: the next visit looks again


def _next_line(fd: int, pos: int) -> int | None:
    """The offset just after the next ``\\n`` at or after ``pos``, reading a step at a time."""
    while True:
        data = os.pread(fd, READ_STEP, pos)
        if not data:
            return None
        nl = data.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(data)

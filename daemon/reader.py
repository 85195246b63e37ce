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


def read_complete(fd: int, offset: int, want: int) -> bytes:
    """Read from ``offset`` about ``want`` bytes and return them up to the last ``\\n``.

    When there is no newline within ``want`` bytes (one very long line), it keeps
    reading until one arrives or the file ends: a line is never cut, however long.
    Bytes after the last newline (a line still being written) are left for later.
    """
    chunks: list[bytes] = []
    pos = offset
    total = 0
    while True:
        data = os.pread(fd, max(want - total, READ_STEP), pos)
        if not data:
            break
        chunks.append(data)
        pos += len(data)
        total += len(data)
        if total >= want and b"\n" in data:
            break
    buf = b"".join(chunks) if len(chunks) != 1 else chunks[0]
    cut = buf.rfind(b"\n")
    return buf[: cut + 1] if cut >= 0 else b""

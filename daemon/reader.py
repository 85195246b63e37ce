"""Reading a transcript file: whole lines only, and the fingerprints that identify it.

Everything here works on an open file descriptor with ``pread`` so that a file that
is renamed, truncated or replaced while it is being read is still read consistently
(the descriptor keeps pointing at the inode that was checked).
"""

from __future__ import annotations

import os

try:  # hashlib's own blake2b; importing hashlib would load OpenSSL's libcrypto (3.3 MB of csmd's RSS)
    from _blake2 import blake2b
except ImportError:  # a Python built without its own blake2
    from hashlib import blake2b

HEAD_LEN = 1024
"""Bytes hashed to recognise a file by its beginning (a replacement changes them)."""
TAIL_LEN = 64
"""Bytes hashed just before the committed offset (a truncation that regrew changes them)."""
READ_STEP = 1 << 20


def digest(data: bytes) -> bytes:
    """A 16-byte fingerprint: of a file's head or tail here, of the price table (``prices``)."""
    return blake2b(data, digest_size=16).digest()


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


def after_unterminated(fd: int, offset: int) -> bytes | None:
    """What follows a checkpoint that ends a final line stored without its newline: ``b""`` (nothing
    yet), ``b"\\n"`` (the newline came after all) or the byte that continues the line. None for the
    usual checkpoint, at the start of the file or just after a newline."""
    if offset <= 0:
        return None
    data = os.pread(fd, 2, offset - 1)
    return None if not data or data[:1] == b"\n" else data[1:]


class LineTooLong(Exception):
    """A complete line longer than the limit (``max_line_bytes``): ``length`` bytes, without its newline.
    ``str`` says so, as a bad line records it."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"line of {length} bytes is over the {limit}-byte limit (max_line_bytes); not stored")
        self.length = length


def check_length(length: int, limit: int) -> None:
    """The one rule for a line too long to store, wherever its length is known: ``LineTooLong``."""
    if length > limit:
        raise LineTooLong(length, limit)


def read_lines(fd: int, offset: int, want: int, max_line: int) -> list[bytes]:
    """The complete lines from ``offset`` in about ``want`` bytes, without their ``\\n``.

    Bytes after the last newline (a line still being written) are left for later.
    When not even one line ends within ``want`` bytes, the line's end is looked for
    first, without keeping what is scanned, and the whole line is then read at once:
    a line is never cut, and a line over ``max_line`` is never held in memory
    (``LineTooLong`` says how long it is). That line is read without its newline, so
    it is returned as read, not copied again by a split (lines reach 64 MB).
    """
    data = os.pread(fd, want, offset)
    cut = data.rfind(b"\n")
    if cut >= 0:
        lines = data.split(b"\n")
        lines.pop()  # what follows the last newline: left for later
        return lines
    if len(data) < want:
        return []  # the file ends inside a line still being written
    length = _line_end(fd, offset + len(data), offset)
    if length is None:
        return []
    check_length(length, max_line)
    del data
    line = os.pread(fd, length, offset)
    if len(line) != length or os.pread(fd, 1, offset + length) != b"\n":
        return []  # changed under us: the next visit looks again
    return [line]


def _line_end(fd: int, pos: int, offset: int) -> int | None:
    """Length of the line that starts at ``offset``, scanning from ``pos`` without keeping the bytes."""
    while data := os.pread(fd, READ_STEP, pos):
        cut = data.find(b"\n")
        if cut >= 0:
            return pos + cut - offset
        pos += len(data)
    return None

"""Standard output and error that never lose the end of a write.

Under ``PYTHONUNBUFFERED=1`` (or ``python -u``), common in containers and CI, Python gives
stdout and stderr an unbuffered binary layer: a raw ``FileIO``, whose ``write`` may write only
part of the bytes and says so only in its return value. A stop signal (Ctrl-Z) while the
process is blocked on a full pipe does exactly that, and ``TextIOWrapper``, like most callers,
ignores the count: the rest is silently gone. ``whole_writes`` puts a layer in between whose
``write`` repeats until every byte is written, or raises.
"""

from __future__ import annotations

import io
import sys
from typing import Any


class WholeWrites(io.RawIOBase):
    """A raw stream over another whose ``write`` returns only once all of ``b`` is written."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self.raw = raw

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.raw.fileno()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def write(self, b: Any) -> int:  # any bytes-like object
        view = memoryview(b).cast("B")
        done = 0
        while done < len(view):
            n = self.raw.write(view[done:])
            if not n:  # None: a non-blocking descriptor is full; 0: nothing can be written
                raise BlockingIOError(0, "output would block or takes no more bytes", done)
            done += n
        return done

    def flush(self) -> None:
        self.raw.flush()


def whole_writes() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` write whole when their binary layer is unbuffered."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, io.TextIOWrapper) or not isinstance(stream.buffer, io.RawIOBase):
            continue  # buffered (BufferedWriter repeats short writes itself), or replaced by a caller
        encoding, errors = stream.encoding, stream.errors
        stream.flush()
        raw = stream.detach()  # detached, the old wrapper no longer closes the descriptor when collected
        setattr(sys, name, io.TextIOWrapper(WholeWrites(raw), encoding=encoding, errors=errors, write_through=True))

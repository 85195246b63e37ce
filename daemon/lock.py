"""The single-instance lock: one csmd per database.

An ``flock`` is released by the kernel when its holder dies, so a crashed csmd never
leaves a stale lock behind (unlike a pid file). The holder writes its pid into the
file so a second csmd can say who is in the way.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from csm.shared.errors import AlreadyRunning, PathError


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            where = f" ({e.filename}: {e.strerror})" if e.filename and str(e.filename) != str(self.path) else \
                f": {e.strerror}"
            raise PathError(f"cannot create the lock file {self.path}{where}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(f"csmd is already running (pid {holder}, lock {self.path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

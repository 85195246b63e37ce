"""The single-instance lock: one csmd per database.

An ``flock`` is released by the kernel when its holder dies, so a crashed csmd never
leaves a stale lock behind (unlike a pid file). The holder writes its pid into the
file so a second csmd can say who is in the way. The file is never a symlink (``O_NOFOLLOW``)
and never another user's (``private_fd``): whoever holds it could keep csmd from starting.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from csm.daemon.private import private_fd
from csm.shared.errors import AlreadyRunning, NotPrivate, PathError


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise NotPrivate(f"refusing the lock file {self.path}: it is a symlink; remove it and start csmd "
                                 "again") from None
            where = f" ({e.filename}: {e.strerror})" if e.filename and str(e.filename) != str(self.path) else \
                f": {e.strerror}"
            raise PathError(f"cannot create the lock file {self.path}{where}") from None
        try:
            private_fd(fd, self.path, "lock file")
        except BaseException:
            os.close(fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(f"csmd is already running (pid {holder}, lock {self.path})") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk: the pid is only a hint for a second csmd; the database says what is wrong
            pass
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

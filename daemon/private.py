"""The files and folders that hold or reach the archive: made private, or refused.

The database (with its WAL and shared-memory file) holds people's prompts, code and
secrets; the lock sits beside it; the socket folder reaches csmd, which answers any
question about them. A file another user owns — made before csmd ran, in a folder others
can write such as ``/tmp`` — stays readable by that user whatever its mode, so it is
refused, not used. A file of ours open to others is closed (0600). The socket folder must
be a real folder, not a symlink someone could point elsewhere (``lstat``, never ``stat``).
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from csm.shared.errors import NotPrivate, PathError


def _who(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _closed(st: os.stat_result, path: Path, what: str) -> bool:
    """Refuse a file another user owns; True when ours but open to others (the caller makes it 0600)."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.getuid():
        raise NotPrivate(
            f"refusing the {what} {path}: it belongs to {_who(st.st_uid)}, not to you ({_who(os.getuid())}), "
            f"mode {mode:04o}, so its owner could read your transcripts; remove it (as its owner or root) "
            "and start csmd again, or give csmd a --db in a folder only you can write to"
        )
    return bool(mode & 0o077)


def private_file(path: Path, what: str) -> None:
    """Refuse ``path`` (or a symlink at it) if another user owns it; make it 0600 if ours and open to others.

    A missing file is fine: csmd creates its files 0600 (umask 077).
    """
    try:
        link = os.lstat(path)
        if stat.S_ISLNK(link.st_mode):
            _closed(link, path, f"{what} (a symlink)")
        if _closed(os.stat(path), path, what):
            os.chmod(path, 0o600)
    except FileNotFoundError:
        return


def private_fd(fd: int, path: Path, what: str) -> None:
    """``private_file`` for a file csmd holds open (no window between the check and the use)."""
    if _closed(os.fstat(fd), path, what):
        os.fchmod(fd, 0o600)


def private_dir(path: Path, what: str = "socket folder") -> None:
    """Create ``path`` 0700, or refuse it if it is a symlink, another user's, or open to others."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise PathError(f"cannot use {path} as the {what}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise NotPrivate(f"refusing the {what} {path}: it is a symlink (to {os.readlink(path)}), which anyone who "
                         f"can write its folder could point elsewhere; remove it ('rm {path}') and start csmd again")
    if not stat.S_ISDIR(st.st_mode):
        raise PathError(f"cannot use {path} as the {what}: it is not a folder; move it away and start csmd again")
    if st.st_uid != os.getuid():
        raise NotPrivate(f"refusing the {what} {path}: it belongs to uid {st.st_uid}, not to you "
                         f"(uid {os.getuid()}); remove it (as its owner or root) and start csmd again")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise NotPrivate(
            f"refusing the {what} {path}: it is open to others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run 'chmod 700 {path}' and start csmd again"
        )

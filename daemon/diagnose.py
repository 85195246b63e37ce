"""What is actually wrong when SQLite fails on the database, told from the filesystem.

SQLite's own words mislead: "disk I/O error" for a full disk at open, "attempt to write a
readonly database" for a folder csmd may not write. Advice for a damaged file — restore a
backup or rebuild — would throw away a healthy archive, so it is given only for damage;
space, permission and a lock held by another program are named as such, with what to do.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from csm.shared import paths
from csm.shared.errors import DatabaseError, Locked, NoPermission, NoSpace


def way_out(db: Path) -> str:
    """What a user can do about a damaged database (said in every such message)."""
    return (f"check it with 'csm db check --db {db}', restore it from a backup, or move it away and start csmd "
            "to rebuild it from the transcripts that still exist (a rebuild cannot bring back the lines of "
            "transcripts Claude Code has deleted since)")


LOW_SPACE = 1 << 20
"""Below this much free space a failed open or write is taken for a full disk."""
DAMAGE = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def lock_holders(db: Path) -> list[str]:
    """Other processes holding a lock on the database (Linux ``/proc/locks``), as "pid N (name)".

    In WAL mode a writer's lock is a byte of the shared-memory file; in rollback mode, the database
    file itself. Empty where the kernel does not say (other systems) or no one else holds one.
    """
    inodes = set()
    for path, _ in paths.db_files(db):
        try:
            st = os.stat(path)
        except OSError:
            continue
        inodes.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    holders: dict[int, bool] = {}
    try:
        locks = Path("/proc/locks").read_text()
    except OSError:
        return []
    for row in locks.splitlines():
        parts = row.split()
        if len(parts) < 6 or parts[1] == "->" or not parts[4].isdigit():
            continue  # "->" marks a process waiting for the lock, not holding it
        try:
            major, minor, ino = parts[5].split(":")
            key = (int(major, 16), int(minor, 16), int(ino))
        except ValueError:
            continue
        pid = int(parts[4])
        if key in inodes and pid != os.getpid():
            holders[pid] = holders.get(pid, False) or parts[3] == "WRITE"
    named = []
    for pid, writes in sorted(holders.items(), key=lambda kv: not kv[1]):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            name = "?"
        named.append(f"pid {pid} ({name})")
    return named


def _owner_mode(path: Path) -> str:
    st = os.stat(path)
    return f"owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"


def diagnose(db: Path, e: sqlite3.Error, doing: str) -> DatabaseError:
    """The error to report for ``e``, raised while ``doing`` (e.g. "cannot open database") on ``db``."""
    said = f"{doing} {db}: {e}"
    name = getattr(e, "sqlite_errorname", "") or ""
    if any(name.startswith(d) for d in DAMAGE):
        return DatabaseError(f"{said}; {way_out(db)}")
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED"):
        holders = lock_holders(db)
        who = f"by {', '.join(holders)}" if holders else "by another program"
        return Locked(f"{said} (locked {who}); it is free once that program ends its transaction or exits")
    try:
        vfs = os.statvfs(db.parent)
        free = vfs.f_bavail * vfs.f_frsize
    except OSError:
        free = None
    if name.startswith("SQLITE_FULL") or (free is not None and free < LOW_SPACE):
        room = f"{free // 1024} KB free" if free is not None else "no space"
        return NoSpace(f"{said} (no space left: {room} on the filesystem of {db.parent}); free some space there, "
                       "or move the database to a roomier disk (csmd --db); the archive itself is unharmed")
    return unwritable(db, said) or DatabaseError(f"{said}; {way_out(db)}")


def unwritable(db: Path, said: str) -> NoPermission | None:
    """The database, a companion or their folder that this user may not write (SQLite would open
    a read-only database without a word, and fail at the first write)."""
    for path in (db.parent, *(p for p, _ in paths.db_files(db))):
        if path.exists() and not os.access(path, os.W_OK, effective_ids=True):
            return NoPermission(f"{said} (no permission to write {path}: {_owner_mode(path)}); make it "
                                f"writable for you ('chmod u+w {path}', and 'chown' it if it is not yours); "
                                "the archive itself is unharmed")
    return None

"""Disk space comes back: the WAL after a burst of work, free pages after deletions (issue 14)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from csmtest import Csmd, db_rows, scalar, wait_for


def _line(i: int, size: int = 200) -> bytes:
    obj = {"type": "user", "uuid": f"u{i}", "sessionId": "s1", "timestamp": "2026-01-01T00:00:00Z",
           "message": {"role": "user", "content": "x" * size}}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _wal(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_wal_is_truncated_once_idle_after_a_burst(csmd: Csmd, projects: Path, db: Path) -> None:
    """A burst of 2 MB of lines (under the old 4 MB poke) grows the WAL; once csmd is idle the WAL goes back
    to nothing, instead of staying at its high-water mark for ever."""
    csmd.start()
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(_line(i, 2000) for i in range(1000)))
    wait_for(lambda: scalar("SELECT count(*) FROM events") == 1000, 20, "the burst to be stored")
    wait_for(lambda: _wal(db) == 0, 15, "the WAL to be truncated once idle")
    assert db_rows(db, "SELECT count(*) FROM events") == [(1000,)], "the rows reached the database file"


def test_many_tiny_commits_keep_the_wal_small(csmd: Csmd, projects: Path, db: Path) -> None:
    """Each tiny commit rewrites a dozen pages: counting line bytes, the checkpoint came ~200x too late and the
    WAL grew to tens of MB over a few hundred appends. Counted in pages, it stays under 16 MB (8-10 MB measured; 76 MB before)."""
    csmd.start()
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"")
    biggest = 0
    with open(f, "ab") as out:
        for i in range(300):
            out.write(_line(i, 50))
            out.flush()
            wait_for(lambda i=i: scalar("SELECT count(*) FROM events") == i + 1, 20, f"line {i}")
            biggest = max(biggest, _wal(db))
    assert biggest <= 16 << 20, f"the WAL grew to {biggest >> 20} MB during 300 tiny appends"

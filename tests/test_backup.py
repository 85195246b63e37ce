"""``csm db backup``: a consistent copy while appends arrive, and a restore that loses nothing (issue 14)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from csmtest import Csmd, current_raws, db_rows, file_lines, run_csm, scalar, sync_now, wait_for


def _line(i: int) -> bytes:
    obj = {"type": "user", "uuid": f"u{i}", "sessionId": "s1", "timestamp": "2026-01-01T00:00:00Z",
           "message": {"role": "user", "content": f"line {i} " + "y" * 1500}}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def test_backup_while_appends_arrive_then_restore(csmd: Csmd, projects: Path, db: Path, tmp_path: Path) -> None:
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(_line(i) for i in range(6000)))
    csmd.start()
    wait_for(lambda: scalar("SELECT count(*) FROM events") == 6000, 30, "the first lines to be stored")

    stop = threading.Event()
    written = [6000]

    def appender() -> None:
        with open(f, "ab") as out:
            while not stop.wait(0.002):
                out.write(_line(written[0]))
                out.flush()
                written[0] += 1

    t = threading.Thread(target=appender)
    t.start()
    backup = tmp_path / "backup.db"
    try:
        wait_for(lambda: scalar("SELECT count(*) FROM events") > 6050, 30, "appends to be arriving")
        r = run_csm("db", "backup", str(backup), "--json")
        wait_for(lambda: scalar("SELECT count(*) FROM events") > 6000 + 200, 30, "appends to go on")
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backup"] == str(backup)
    assert backup.stat().st_mode & 0o777 == 0o600, "the copy is readable only by its owner"
    assert not Path(f"{backup}-wal").exists() and db_rows(backup, "PRAGMA journal_mode") == [("delete",)]
    assert not list(tmp_path.glob(".backup.db.partial-*"))

    # One snapshot: the checkpoint and the rows of the copy agree exactly, mid-stream.
    offset = db_rows(backup, "SELECT last_position FROM sync_metadata")[0][0]
    lines = file_lines(f)
    stored = [r[0] for r in db_rows(backup, "SELECT raw FROM events ORDER BY line_offset")]
    assert 6050 < len(stored) < len(lines), "the backup was taken while appends were arriving"
    assert stored == lines[: len(stored)]
    assert f.read_bytes()[:offset].count(b"\n") == len(stored)

    again = run_csm("db", "backup", str(backup))
    assert again.returncode == 73 and "never writes over" in again.stderr
    assert [r[0] for r in db_rows(backup, "SELECT count(*) FROM events")] == [len(stored)]

    # Restore as README says: stop csmd, put the copy in place (no WAL of the old file beside it), start.
    sync_now()
    csmd.stop()
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        p.unlink(missing_ok=True)
    shutil.copyfile(backup, db)
    csmd.start()
    sync_now()
    assert current_raws(db, f) == file_lines(f), "every line once: the copy's, then those read again"
    assert db_rows(db, "SELECT count(*) FROM events") == [(len(file_lines(f)),)]


def test_backup_refuses_a_missing_folder_without_a_traceback(csmd: Csmd, projects: Path, tmp_path: Path) -> None:
    csmd.start()
    r = run_csm("db", "backup", str(tmp_path / "nowhere" / "b.db"))
    assert r.returncode != 0 and "no folder" in r.stderr and "Traceback" not in r.stderr

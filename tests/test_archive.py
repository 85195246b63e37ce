"""csm archive: old sessions moved into yearly archive files, and everything still reads them exactly."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from csmtest import REAL, Csmd, db_rows, run_csm, sql, status, sync_now, wait_for
from test_export import check_every_file, complete

from csm.daemon import rawtext
from csm.daemon.rawtext import RAW
from csm.shared.paths import archive_path

EVERYTHING = "2099-01-01"
"""A --before that every session ended before (the fixtures' files are as old as the checkout)."""
LINES = "SELECT file_path, line_offset, generation, current, raw FROM lines ORDER BY file_path, generation, line_offset"


def _started(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[Path, Csmd]:
    """A copy of the real fixtures (the test may change it) and a csmd reading it."""
    root = tmp_path / "real"
    shutil.copytree(REAL, root)
    return root, Csmd(tmp_path, ["--root", str(root), *args], env=env).start()


def _archive(*args: str) -> Any:
    r = run_csm("archive", "--before", EVERYTHING, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _places(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row of each file, read straight from the files: (id, file, generation, offset, text)."""
    conn = rawtext.register(sqlite3.connect(f"file:{db}?mode=ro", uri=True), db)
    try:
        q = f"SELECT e.id, e.file_id, e.generation, e.line_offset, {RAW} FROM {{}}events e ORDER BY e.id"
        places = {"main": conn.execute(q.format("main.")).fetchall()}
        for (name,) in conn.execute("SELECT name FROM archives").fetchall():
            conn.execute("ATTACH ? AS a", (f"file:{archive_path(db, name)}?mode=ro",))
            places[name] = conn.execute(q.format("a.")).fetchall()
            conn.execute("DETACH a")
        return places
    finally:
        conn.close()


def _exactly_once(db: Path) -> list[tuple[Any, ...]]:
    """Every row, checked to be in exactly one file (no id in two places), in id order."""
    places = _places(db)
    ids = [r[0] for rows in places.values() for r in rows]
    assert len(ids) == len(set(ids)), {p: len(r) for p, r in places.items()}
    return sorted(r for rows in places.values() for r in rows)


def _answers(session: str) -> dict[str, str]:
    """What the CLI answers about the history: must be the same before and after archival."""
    out = {}
    for name, args in {"show": ("query", "show", session), "search": ("query", "search", "the", "--include-tools",
                                                                     "--json"),
                       "filtered": ("query", "search", "error", "--since", "2020-01-01", "--json"),
                       "usage": ("query", "usage", "--by", "session", "--json"),
                       "sessions": ("query", "sessions", "--json"), "errors": ("query", "errors", "--json")}.items():
        r = run_csm(*args)
        assert r.returncode == 0, (name, r.stderr)
        out[name] = r.stdout
    # Sessions without a timestamp tie on last_activity: their order is SQLite's choice, which may change.
    out["sessions"] = json.dumps(sorted(json.loads(out["sessions"]), key=lambda s: json.dumps(s, sort_keys=True)))
    return out


def test_real_fixtures_round_trip_after_archival(tmp_path: Path, db: Path) -> None:
    """Every real fixture exports byte for byte from its archive; show, search, usage, sessions, errors and
    the lines view answer exactly as before; status and list count it; the archives are read-only."""
    root, d = _started(tmp_path)
    try:
        session = sql("SELECT session_id FROM sessions ORDER BY lines DESC LIMIT 1")[0]["session_id"]
        before, lines, rows = _answers(session), sql(LINES), _exactly_once(db)
        moved = _archive()
        assert moved["sessions"] == 15 and moved["lines"] == len(rows) == 581
        assert db_rows(db, "SELECT count(*) FROM main.events") == [(0,)]
        assert check_every_file(root, db) == 16
        assert _answers(session) == before
        assert sql(LINES) == lines
        assert _exactly_once(db) == rows
        listed = json.loads(run_csm("archive", "list", "--json").stdout)
        assert [a["name"] for a in listed] == ["2025", "2026"]
        assert sum(a["sessions"] for a in listed) == 15 and sum(a["lines"] for a in listed) == 581
        for a in listed:
            assert a["problem"] is None and a["first"] <= a["last"] and a["bytes"] == Path(a["file"]).stat().st_size
            assert Path(a["file"]).stat().st_mode & 0o777 == 0o400, "read-only once written"
        assert listed == moved["archives"]
        s = status()
        assert (s["archived_sessions"], s["archived_lines"], s["events"], s["sessions"]) == (15, 581, 581, 15)
        assert "archived   15 sessions, 581 lines" in run_csm("status").stdout
        check = run_csm("db", "check", "--json")
        assert check.returncode == 0, check.stderr
        assert [a["ok"] for a in json.loads(check.stdout)["archives"]] == [True, True]
        stored = sum(Path(a["file"]).stat().st_size for a in listed)
        assert stored < sum(len(complete(f)) for f in root.rglob("*.jsonl")), "archives are compressed"
        assert _archive()["sessions"] == 0, "nothing left to move"
        backup = tmp_path / "backup" / "b.db"
        backup.parent.mkdir()
        r = run_csm("db", "backup", str(backup), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["archives"] == [str(archive_path(backup, n)) for n in ("2025", "2026")]
        r = run_csm("db", "check", "--db", str(backup), "--json")
        assert r.returncode == 0 and [a["ok"] for a in json.loads(r.stdout)["archives"]] == [True, True], r.stderr
    finally:
        assert d.stop() == 0
    d.start()  # a restart reads the archives again, and keeps its ids above the archived ones
    try:
        assert sql(LINES) == lines and _answers(session) == before
        assert status()["events"] == 581
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("point", ["journal:0", "copying:0", "copied:0", "deleted:0", "copying:4", "copied:9"])
def test_sigkill_during_archival_leaves_every_line_once(tmp_path: Path, db: Path, point: str) -> None:
    """Killed at each step of a move (and after some sessions moved), csmd starts again with every line in
    exactly one place, rows and bytes; the lines view and exports are unchanged; a new run finishes the job."""
    root, d = _started(tmp_path, env={"CSM_TEST_HOOKS": "1", "CSM_TEST_ARCHIVE_KILL": point})
    lines, rows = sql(LINES), _exactly_once(db)
    client = subprocess.Popen([sys.executable, "-m", "csm.client", "archive", "--before", EVERYTHING],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert d.proc is not None
        assert d.proc.wait(60) == -9, "the hook killed csmd"
    finally:
        client.kill()
        client.wait()
    d.proc = None
    if point.startswith("copied"):  # the one moment a line is in two files: the journal names its file
        places = _places(db)
        archived = {r[0]: r[1] for name, rows in places.items() if name != "main" for r in rows}
        twice = {archived[r[0]] for r in places["main"] if r[0] in archived}
        assert twice == {r[0] for r in db_rows(db, "SELECT file_id FROM archive_journal")} and len(twice) == 1
    else:
        assert _exactly_once(db) == rows
    d.env = {}
    d.start()
    try:
        assert db_rows(db, "SELECT count(*) FROM archive_journal") == [(0,)]
        assert _exactly_once(db) == rows
        assert sql(LINES) == lines
        assert ("undid the move" in d.log()) == (not point.startswith("deleted"))
        done = _archive()
        assert done["sessions"] + int(point.split(":")[1]) + point.startswith("deleted") == 15
        assert _exactly_once(db) == rows and db_rows(db, "SELECT count(*) FROM main.events") == [(0,)]
        assert check_every_file(root, db) == 16
    finally:
        assert d.stop() == 0


def test_an_archive_deleted_or_damaged_by_hand_is_named_and_the_rest_works(tmp_path: Path, db: Path) -> None:
    root, d = _started(tmp_path)
    try:
        _archive()
        by_year = _sessions_by_archive()
        gone, damaged = archive_path(db, "2026"), archive_path(db, "2025")
        gone.unlink()
        shown = run_csm("query", "show", by_year["2026"])
        assert shown.returncode == 6 and str(gone) in shown.stderr and "missing" in shown.stderr, shown.stderr
        exported = run_csm("export", by_year["2026"], "--raw", "-o", str(tmp_path / "out.jsonl"))
        assert exported.returncode == 6 and str(gone) in exported.stderr
        assert run_csm("query", "show", by_year["2025"]).returncode == 0, "the other archive still reads"
        assert run_csm("query", "search", "the").returncode == 0
        assert str(gone) in (status()["db_problem"] or "")
        listed = {a["name"]: a for a in json.loads(run_csm("archive", "list", "--json").stdout)}
        assert "missing" in listed["2026"]["problem"] and listed["2025"]["problem"] is None
        check = run_csm("db", "check")
        assert check.returncode == 1 and str(gone) in check.stderr and f"{gone}: missing" in check.stdout

        damaged.chmod(0o600)
        with open(damaged, "r+b") as f:
            f.write(b"this is not a database, it was overwritten by hand" * 4)
        shown = run_csm("query", "show", by_year["2025"])
        assert shown.returncode == 6 and str(damaged) in shown.stderr, shown.stderr
        check = run_csm("db", "check", "--json")
        assert check.returncode == 1 and str(damaged) in check.stderr
        assert not any(a["ok"] for a in json.loads(check.stdout)["archives"])
        assert run_csm("query", "sessions").returncode == 0
        assert run_csm("status").returncode == 0
        (root / "new.jsonl").write_bytes(complete(REAL / "spotter" / "short.jsonl"))
        wait_for(lambda: sql("SELECT count(*) n FROM sessions WHERE session_id = 'new'")[0]["n"], 20, "a new session")
        assert run_csm("query", "show", "new").returncode == 0, "ingestion and reads of main go on"
    finally:
        assert d.stop() == 0


def _sessions_by_archive() -> dict[str, str]:
    """One session id per archive name."""
    return {r["archive"]: r["session_id"] for r in sql(
        "SELECT f.archive, s.session_id FROM archived_files f JOIN session_stats s ON s.file_id = f.file_id "
        "WHERE s.session_id NOT LIKE 'agent-%' GROUP BY f.archive")}


def test_appends_to_an_archived_session_go_to_main_and_export_exactly(tmp_path: Path, db: Path) -> None:
    """A resumed session (after a restart, with no line left in main): new lines land in the main file with new
    ids, export concatenates archive and main byte for byte, and a second archival moves them into the same
    archive."""
    root, d = _started(tmp_path)
    target = root / "spotter" / "tool_heavy.jsonl"
    try:
        _archive()
        assert d.stop() == 0
        d.start()  # main holds no line now: the new ones must still get ids above every archived one
        file_id = sql("SELECT file_id FROM sync_metadata WHERE file_path = ?", str(target))[0]["file_id"]
        home = sql("SELECT archive FROM archived_files WHERE file_id = ?", file_id)[0]["archive"]
        old = sql("SELECT count(*) n FROM lines WHERE file_path = ?", str(target))[0]["n"]
        appended = [json.dumps({"type": "user", "sessionId": "tool_heavy", "uuid": f"resumed-{i}",
                                "timestamp": "2026-03-01T00:00:00Z",
                                "message": {"role": "user", "content": f"resumed line {i}, zanzibar"}}) for i in range(5)]
        with open(target, "ab") as f:
            f.write("".join(a + "\n" for a in appended).encode())
        sync_now()
        assert db_rows(db, "SELECT count(*) FROM main.events WHERE file_id = ?", file_id) == [(5,)]
        assert check_every_file(root, db) == 16
        assert sql("SELECT count(*) n FROM lines WHERE file_path = ?", str(target))[0]["n"] == old + 5
        found = run_csm("query", "search", "zanzibar", "--json")
        assert len(json.loads(found.stdout)) == 5
        ids_before = _exactly_once(db)
        again = _archive()
        assert again["sessions"] == 1 and again["lines"] == 5
        assert sql("SELECT archive, lines FROM archived_files WHERE file_id = ?", file_id) == [
            {"archive": home, "lines": old + 5}], "the same archive, whatever the session's new end"
        assert _exactly_once(db) == ids_before
        assert check_every_file(root, db) == 16
    finally:
        assert d.stop() == 0


def test_decompress_writes_a_plain_copy_for_outside_tools(tmp_path: Path, db: Path) -> None:
    """After compression and archival, the copy holds every line's text in raw, readable by plain sqlite3."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("compress_after_days = 0\n")
    root, d = _started(tmp_path, "--config", str(cfg))
    try:
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events WHERE zraw IS NULL") == [(0,)], 30, "compression")
        _archive()
        (root / "fresh.jsonl").write_bytes(complete(REAL / "spotter" / "short.jsonl"))  # a session in main
        sync_now()
        lines = sql(LINES)
        assert db_rows(db, "SELECT count(*) FROM main.events")[0][0] > 0
        out = tmp_path / "plain.db"
        r = run_csm("db", "decompress", str(out), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["copy"] == str(out)
        again = run_csm("db", "decompress", str(out))
        assert again.returncode == 73 and "never writes over" in again.stderr
    finally:
        assert d.stop() == 0
    conn = sqlite3.connect(out)  # no csm: what datasette or sqlite3 see
    try:
        got = [dict(zip(("file_path", "line_offset", "generation", "current", "raw"), r)) for r in conn.execute(LINES)]
        assert conn.execute("SELECT count(*) FROM events WHERE zraw IS NOT NULL OR raw = ''").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM archives").fetchone() == (0,)
    finally:
        conn.close()
    assert got == lines
    assert os.stat(out).st_mode & 0o077 == 0, "private"


def test_a_session_whose_file_changed_after_the_date_stays_and_is_counted(tmp_path: Path, db: Path) -> None:
    """A transcript copied or restored today ended long ago by its lines, but its file is new: it stays (it may
    still be written to), and the reply says how many stayed and why instead of a bare "moved 0"."""
    root = tmp_path / "real"
    shutil.copytree(REAL, root)
    old = 1767225600  # 2026-01-01: before the cut, like every session's last line
    for f in root.rglob("*.jsonl"):
        os.utime(f, (old, old))
    fresh = root / "spotter" / "tool_heavy.jsonl"
    os.utime(fresh)  # copied just now
    d = Csmd(tmp_path, ["--root", str(root)]).start()
    try:
        r = run_csm("archive", "--before", "1d")
        assert r.returncode == 0, r.stderr
        assert "left for later: 1 whose transcript file changed after that date (they move once it is older)" \
            in r.stdout, r.stdout
        file_id = sql("SELECT file_id FROM sync_metadata WHERE file_path = ?", str(fresh))[0]["file_id"]
        assert db_rows(db, "SELECT count(*) > 0 FROM main.events WHERE file_id = ?", file_id) == [(1,)]
        assert sql("SELECT count(*) n FROM archived_files WHERE file_id = ?", file_id)[0]["n"] == 0
        assert sql("SELECT count(*) n FROM archived_files")[0]["n"] > 0, "the others moved"
    finally:
        assert d.stop() == 0

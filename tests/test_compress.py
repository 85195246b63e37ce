"""Quiet sessions stored compressed, and everything still reads them exactly (issue 14)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

from csmtest import REAL, WITHOUT_ARCHIVES, Csmd, db_rows, run_csm, scalar, sql, sync_now, wait_for
from test_export import check_every_file, complete


def _config(tmp_path: Path, days: float) -> Path:
    p = tmp_path / "compress.toml"
    p.write_text(f"compress_after_days = {days}\n")
    return p


def _plain(db: Path) -> int:
    return db_rows(db, "SELECT count(*) FROM events WHERE zraw IS NULL")[0][0]


def _all_compressed(db: Path) -> bool:
    return db_rows(db, "SELECT count(*) FROM events WHERE zraw IS NULL")[0][0] == 0 and \
        db_rows(db, "SELECT count(*) FROM events")[0][0] > 0


def _line(i: int, session: str = "s-live") -> bytes:
    obj = {"type": "user", "uuid": f"{session}-u{i}", "sessionId": session, "timestamp": "2026-01-01T00:00:00Z",
           "message": {"role": "user", "content": f"appended line {i}: please refactor module {i % 17}"}}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _outside_tool_reads(db: Path) -> list[tuple[str, int, str]]:
    """README's recipe for another tool: plain sqlite3 and zstandard, no csm."""
    import sqlite3

    import zstandard

    path = db
    conn = sqlite3.connect(path); d = {i: zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(b)) for i, b in conn.execute("SELECT id, dict FROM raw_dictionaries")}; d[None] = zstandard.ZstdDecompressor()  # noqa: E501, E702
    text = lambda raw, zraw, dict_id: raw if zraw is None else d[dict_id].decompress(zraw).decode()  # noqa: E731
    try:
        return [(p, o, text(r, z, i)) for p, o, r, z, i in conn.execute(
            "SELECT file_path, line_offset, raw, zraw, dict_id FROM lines ORDER BY file_path, line_offset")]
    finally:
        conn.close()


def test_every_real_fixture_round_trips_after_compression(tmp_path: Path, db: Path) -> None:
    """Compressed rows export byte for byte, read the same through the lines view, and show and search
    answer exactly as they did before compression."""
    root = tmp_path / "real"
    shutil.copytree(REAL, root)
    d = Csmd(tmp_path, ["--root", str(root), "--config", str(_config(tmp_path, 1000))]).start()
    try:
        before_lines = sql("SELECT file_path, line_offset, raw FROM lines ORDER BY file_path, line_offset")
        session = scalar("SELECT session_id FROM sessions ORDER BY lines DESC LIMIT 1")
        show = run_csm("query", "show", session)
        search = run_csm("query", "search", "the", "--include-tools", "--json")
        assert show.returncode == 0 and search.returncode == 0, (show.stderr, search.stderr)
        assert _plain(db) > 500
    finally:
        assert d.stop() == 0
    d = Csmd(tmp_path, ["--root", str(root), "--config", str(_config(tmp_path, 0))]).start()
    try:
        wait_for(lambda: _all_compressed(db), 30, "every row to be compressed")
        assert db_rows(db, "SELECT count(*) FROM events WHERE raw != ''") == [(0,)]
        assert db_rows(db, "SELECT count(DISTINCT dict_id) FROM events") == [(1,)], "one dictionary"
        assert check_every_file(root, db) == 16
        assert sql("SELECT file_path, line_offset, raw FROM lines ORDER BY file_path, line_offset") == before_lines
        assert run_csm("query", "show", session).stdout == show.stdout
        assert run_csm("query", "search", "the", "--include-tools", "--json").stdout == search.stdout
        assert _outside_tool_reads(db) == [(r["file_path"], r["line_offset"], r["raw"]) for r in before_lines]
        stored = sum(r[0] for r in db_rows(db, "SELECT length(zraw) FROM events"))
        plain = sum(len(complete(f)) for f in root.rglob("*.jsonl"))
        assert stored < 0.5 * plain, f"compressed to {stored / plain:.0%}"
    finally:
        assert d.stop() == 0


def test_compressed_session_takes_appends_and_a_second_dictionary(tmp_path: Path, projects: Path, db: Path) -> None:
    """A quiet session wakes up: its new lines are stored (plain, then compressed too), a grown archive trains
    a second dictionary, and rows of both dictionaries read back exactly."""
    f = projects / "p" / "s-live.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(_line(i) for i in range(300)))
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 0))]).start()
    try:
        wait_for(lambda: _all_compressed(db), 30, "the first lines to be compressed")
        assert db_rows(db, "SELECT count(*) FROM raw_dictionaries") == [(1,)]
        with open(f, "ab") as out:
            out.write(b"".join(_line(i) for i in range(300, 1500)))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events") == [(1500,)], 30, "the appends to be stored")
        wait_for(lambda: _all_compressed(db), 30, "the appended lines to be compressed too")
        assert db_rows(db, "SELECT count(*) FROM raw_dictionaries") == [(2,)], "a second dictionary"
        assert db_rows(db, "SELECT count(DISTINCT dict_id) FROM events") == [(2,)], "rows of both in use"
        assert run_csm("export", "--raw", str(f)).stdout.encode() == f.read_bytes()
        assert [r["raw"] for r in sql("SELECT raw FROM lines ORDER BY line_offset")] == \
            [x.decode() for x in f.read_bytes().split(b"\n")[:-1]]
    finally:
        assert d.stop() == 0
    # The rows of the old dictionary stay readable after a restart (dictionaries are read from the table).
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 0))]).start()
    try:
        assert run_csm("export", "--raw", str(f)).stdout.encode() == f.read_bytes()
    finally:
        assert d.stop() == 0


def test_sigkill_during_compression_keeps_every_line_once(tmp_path: Path, projects: Path, db: Path) -> None:
    """Killed while it compresses (40,000 lines take it a second or two), csmd restarts and finishes: every
    line exactly once, each row plain or compressed, the bytes exact."""
    files, total = [], 40 * 1000
    for s in range(40):
        f = projects / "p" / f"s{s:02d}.jsonl"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"".join(_line(i, f"s{s:02d}") for i in range(1000)))
        files.append(f)
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 1000))]).start(wait=False)
    d.wait_ready(120)  # 40,000 lines: a first scan of some 20-80 s on a loaded machine
    assert d.stop() == 0
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 0))])
    d.start()
    wait_for(lambda: _plain(db) < total, 30, "compression to be under way")
    d.stop(signal.SIGKILL)
    killed_at = _plain(db)
    d.start()
    wait_for(lambda: _all_compressed(db), 60, "compression to finish after the restart")
    assert db_rows(db, "SELECT count(*), count(DISTINCT uuid), min(id), max(id) FROM events") == \
        [(total, total, 1, total)], "every line once, each under the id it was stored with"
    assert db_rows(db, "SELECT count(*) FROM events WHERE raw != '' OR zraw IS NULL") == [(0,)]
    for f in files:
        assert run_csm("export", "--raw", str(f)).stdout.encode() == f.read_bytes(), f
    assert d.stop() == 0
    assert killed_at < total  # 0 only if the kill came after the last batch (rare): then it checks a restart


def test_a_rewritten_compressed_file_reattaches_its_rows(tmp_path: Path, projects: Path, db: Path) -> None:
    """A compressed session's file replaced by a copy with one line changed: the re-read compares the stored
    (compressed) lines with the file's bytes and re-attaches the unchanged ones instead of storing them again."""
    f = projects / "p" / "s-live.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(_line(i) for i in range(300)))
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 0))]).start()
    try:
        wait_for(lambda: _all_compressed(db), 30, "the lines to be compressed")
        lines = f.read_bytes().split(b"\n")[:-1]
        lines[150] = _line(9999).rstrip(b"\n")
        tmp = f.with_suffix(".tmp")
        tmp.write_bytes(b"\n".join(lines) + b"\n")
        tmp.rename(f)  # a new inode: read again from 0 as a new generation
        sync_now()
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events") == [(301,)], 30, "the changed line alone added")
        assert db_rows(db, "SELECT count(*) FROM lines WHERE current") == [(300,)]
        assert run_csm("export", "--raw", str(f)).stdout.encode() == f.read_bytes()
    finally:
        assert d.stop() == 0


def test_the_wal_compression_filled_is_emptied_once_idle(tmp_path: Path, projects: Path, db: Path) -> None:
    f = projects / "p" / "s-live.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(_line(i) for i in range(5000)))
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 0))]).start()
    try:
        wait_for(lambda: _all_compressed(db), 30, "the lines to be compressed")
        wal = Path(f"{db}-wal")
        wait_for(lambda: not wal.exists() or wal.stat().st_size == 0, 15, "the WAL to be emptied after compression")
    finally:
        assert d.stop() == 0


def _tool_line(i: int, session: str) -> bytes:
    """A line of ~2 KB of tool output (in the contentless tool index, not in message_text): its row is most of
    what the line costs in the file."""
    words = [f"{w}{(i * 7 + k) % 97}" for k, w in enumerate(["src/module", "def", "return", "self.value", "import",
                                                              "assert", "pytest", "passed"] * 30)]
    obj = {"type": "user", "uuid": f"{session}-t{i}", "sessionId": session, "timestamp": "2026-01-01T00:00:00Z",
           "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i}",
                                                    "content": " ".join(words)}]}}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _events_bytes(db: Path) -> int:
    return db_rows(db, "SELECT sum(pgsize) FROM dbstat WHERE name = 'events'")[0][0]


def _idle(db: Path) -> bool:
    wal = Path(f"{db}-wal")
    return db_rows(db, "PRAGMA freelist_count")[0][0] < 64 and (not wal.exists() or wal.stat().st_size == 0)


def test_compressed_rows_give_their_pages_back(tmp_path: Path, projects: Path, db: Path) -> None:
    """Compressed rows are packed into fresh pages and the freed ones go back: the events table and the file
    shrink with the lines (rewritten in place, each row left its page two-thirds empty and the file as big)."""
    f = projects / "p" / "s-tools.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(_tool_line(i, "s-tools") for i in range(4000)))
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 1000))]).start()
    assert d.stop() == 0
    events, size = _events_bytes(db), db.stat().st_size
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 0))]).start()
    try:
        wait_for(lambda: _all_compressed(db), 30, "the lines to be compressed")
        wait_for(lambda: _idle(db), 30, "the free pages to be given back and the WAL emptied")
        assert _events_bytes(db) < 0.5 * events, f"events: {events >> 10} -> {_events_bytes(db) >> 10} KB"
        assert db.stat().st_size < size - 0.8 * (events - _events_bytes(db)), "the file shrank as much"
        assert run_csm("export", "--raw", str(f)).stdout.encode() == f.read_bytes()
    finally:
        assert d.stop() == 0


def test_rows_an_earlier_csm_compressed_in_place_are_rewritten(tmp_path: Path, projects: Path, db: Path) -> None:
    """A database where rows were compressed in place (csm before migration 11) has them rewritten into fresh
    pages once, as idle work: the pages come back, every line reads the same."""
    import sqlite3

    import zstandard

    f = projects / "p" / "s-old.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(_tool_line(i, "s-old") for i in range(4000)))
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 1000))]).start()
    assert d.stop() == 0
    conn = sqlite3.connect(db)  # what the earlier compressor did: an UPDATE of each row (no dictionary here)
    z = zstandard.ZstdCompressor()
    conn.executemany("UPDATE events SET raw = '', zraw = ? WHERE id = ?",
                     [(z.compress(raw), i) for i, raw in conn.execute("SELECT id, CAST(raw AS BLOB) FROM events")])
    conn.executescript(f"{WITHOUT_ARCHIVES} DROP TABLE compress_rewrite; DROP INDEX events_plain; "
                       "PRAGMA user_version = 10;")
    conn.commit()
    conn.close()
    events = _events_bytes(db)
    d = Csmd(tmp_path, ["--config", str(_config(tmp_path, 1000))]).start()
    try:
        wait_for(lambda: db_rows(db, "SELECT below FROM compress_rewrite") == [(0,)], 30, "the rewrite to end")
        wait_for(lambda: _idle(db), 30, "the free pages to be given back")
        assert _events_bytes(db) < 0.5 * events, f"events: {events >> 10} -> {_events_bytes(db) >> 10} KB"
        assert "rewrote 4000 lines compressed by an earlier csm" in d.log()
        assert db_rows(db, "SELECT count(*), min(id), max(id), count(zraw) FROM events") == [(4000, 1, 4000, 4000)]
        assert run_csm("export", "--raw", str(f)).stdout.encode() == f.read_bytes()
    finally:
        assert d.stop() == 0

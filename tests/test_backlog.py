"""A large backlog (a first sync of a long history) neither starves a live session nor leaves search behind.

A real csmd reads a backlog of many files while a live session is appended to; the rows' ids tell
the order in which lines were stored, so the checks are about order and completeness, not time.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from csmtest import Csmd, db_rows, scalar, wait_for
from lines import append, prompt, record, response

FILES = 40
LINES = 400
"""40 files of 400 lines of about 1.3 KB: a 21 MB backlog, above ``search_defer_tools_bytes`` (16 MB)."""


def backlog(projects: Path) -> None:
    pad = " ".join(f"filler{j}" for j in range(150))
    for k in range(FILES):
        out = []
        for i in range(LINES):
            s = f"b{k}"
            if i % 2:
                out.append(record(response(f"{s}-a{i}", s, "2026-11-01T10:00:00.000Z",
                                           {"id": f"m{k}-{i}", "model": "claude-opus-4-6",
                                            "content": [{"type": "text", "text": f"answer backlogword {pad}"},
                                                        {"type": "tool_use", "id": f"t{k}-{i}", "name": "Bash",
                                                         "input": {"command": f"toolword{k}x{i}"}}],
                                            "usage": {"input_tokens": 1, "output_tokens": 2}},
                                           request=f"r{k}-{i}"), newline=True))
            else:
                out.append(record(prompt(f"{s}-u{i}", s, "2026-11-01T10:00:00.000Z", f"question backlogword {pad}"),
                                  newline=True))
        (projects / "old" / f"b{k}.jsonl").parent.mkdir(exist_ok=True)
        (projects / "old" / f"b{k}.jsonl").write_bytes(b"".join(out))


def rows(db: Path) -> int:
    """Rows stored so far, read from the database directly (csmd's socket may not be up yet)."""
    try:
        return db_rows(db, "SELECT count(*) FROM events")[0][0]
    except sqlite3.Error:  # not created yet
        return 0


def test_a_live_session_is_stored_while_a_large_backlog_is_read(csmd: Csmd, projects: Path, db: Path) -> None:
    """Lines appended to a live session during a first sync are stored between the backlog's batches,
    not after all of it (the rescan serves hints between files and batches)."""
    backlog(projects)
    live = projects / "live" / "s-live.jsonl"
    append(live, record(prompt("l0", "s-live", "2026-11-01T10:00:00.000Z", "first"), newline=True))
    csmd.start(wait=False)
    wait_for(lambda: rows(db) > 0, 60, "the first rows")
    append(live, record(prompt("l1", "s-live", "2026-11-01T10:00:01.000Z", "liveword"), newline=True))
    total = FILES * LINES + 2
    wait_for(lambda: rows(db) == total, 120, "every line")
    live_id = db_rows(db, "SELECT max(e.id) FROM events e WHERE e.uuid = 'l1'")[0][0]
    after = db_rows(db, "SELECT count(*) FROM events WHERE id > ?", live_id)[0][0]
    assert after > LINES, f"the live line was stored after {FILES * LINES - after} of {FILES * LINES} backlog lines"


def test_search_finds_every_line_once_the_backlog_is_indexed(csmd: Csmd, projects: Path, db: Path) -> None:
    """During a large backlog the prose and the tool text are indexed after the rows; once the
    catch-up is done every line is found, once, as if it had been indexed with its row."""
    backlog(projects)
    csmd.start()
    wait_for(lambda: scalar("SELECT count(*) FROM search_tools_pending") == 0, 120, "the tool-text catch-up")
    lines = FILES * LINES
    prose = db_rows(db, "SELECT count(*) FROM search_text WHERE search_text MATCH 'backlogword'")[0][0]
    assert prose == lines
    assert db_rows(db, "SELECT count(*) FROM message_text")[0][0] == lines
    tools = db_rows(db, "SELECT count(*) FROM search_tools WHERE search_tools MATCH 'bash'")[0][0]
    assert tools == lines // 2
    assert db_rows(db, "SELECT count(*) FROM search_text_pending")[0][0] == 0
    assert f"indexed the prose of {lines} lines" in csmd.log(), "the prose was indexed with its rows, not after"
    hits = json.loads(csmd_search("toolword7x301"))
    assert [h["session_id"] for h in hits] == ["b7"]
    found = db_rows(db, "SELECT rowid FROM search_text WHERE search_text MATCH 'backlogword' ORDER BY rowid")
    assert found == db_rows(db, "SELECT event_id FROM message_text ORDER BY event_id"), "each line's prose once"
    # The catch-up's commits reach the checkpoint thread like any others: once idle, the WAL is emptied.
    wal = db.with_name(db.name + "-wal")
    wait_for(lambda: not wal.exists() or wal.stat().st_size == 0, 30, "the WAL the catch-up filled to be emptied")


def csmd_search(text: str) -> str:
    from csmtest import run_csm

    r = run_csm("query", "search", text, "--include-tools", "--json")
    assert r.returncode == 0, r.stderr
    return r.stdout

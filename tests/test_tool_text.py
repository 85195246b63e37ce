"""Tool text is indexed as written (no stemming), and migration 13 rebuilds an earlier database's tool-text index
from its stored lines: every word found once, in bounded transactions, resumed after a SIGKILL."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from csmtest import WITHOUT_TOOL_TEXT_UNSTEMMED, Csmd, csm_json, db_rows, run_csm, wait_for
from lines import append, prompt, record, response

from csm.daemon.migrations import MIGRATIONS
from csm.daemon.parse import parse
from csm.daemon import rawtext
from csm.daemon.rawtext import RAW
from csm.daemon.search import BACKFILL_BATCH, extract

BEFORE = len(MIGRATIONS) - 1
"""The schema version before migration 13 (the last one when it was written)."""
assert MIGRATIONS[BEFORE][0] == "tool_text_unstemmed"


def tool_line(i: int, session: str, ts: str) -> bytes:
    """An assistant line calling a tool whose input holds the word toolword<i> (about 600 bytes)."""
    return record(response(f"{session}-a{i}", session, ts, {
        "id": f"m-{session}-{i}", "model": "claude-opus-4-6",
        "content": [{"type": "tool_use", "id": f"t{i}", "name": "Bash",
                     "input": {"command": f"grep -rn toolword{i} src/ " + "padding " * 60}}],
        "usage": {"input_tokens": 1, "output_tokens": 1}}, request=f"r-{session}-{i}"), newline=True)


def tool_words(db: Path) -> dict[str, list[int]]:
    """Each toolword<i> in search_tools with the rowids that have it, read from the index itself (fts5vocab)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, search_tools, 'instance')")
        words: dict[str, list[int]] = {}
        for term, doc in conn.execute("SELECT term, doc FROM v WHERE term GLOB 'toolword*' ORDER BY term, doc"):
            words.setdefault(term, []).append(doc)
        return words
    finally:
        conn.close()


def documents(db: Path) -> tuple[int, int]:
    """(documents FTS5 counted as inserted into search_tools, rows of its docsize table): a line indexed twice
    counts twice in the first (its averages record, a varint at the head) but not in the second."""
    block, rows = db_rows(db, "SELECT (SELECT block FROM search_tools_data WHERE id = 1), "
                              "(SELECT count(*) FROM search_tools_docsize)")[0]
    total = 0
    for byte in block:
        total = (total << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return total, rows


def expected_words(db: Path) -> dict[str, list[int]]:
    """toolword<i> -> [the id of the line whose tool input has it], from the stored lines."""
    return {f"toolword{int(line.split('toolword')[1].split()[0])}": [i]
            for i, line in db_rows(db, "SELECT e.id, e.raw FROM events e WHERE e.raw LIKE '%toolword%'")}


def downgrade(db: Path, stemmed_index: bool = True) -> None:
    """Make the database one an earlier csm left: migration 13 taken out, the tool text indexed as then
    (stemmed) when ``stemmed_index``."""
    conn = rawtext.register(sqlite3.connect(db, isolation_level=None), db)
    try:
        conn.executescript(f"BEGIN; {WITHOUT_TOOL_TEXT_UNSTEMMED}")
        if stemmed_index:
            for i, raw in conn.execute(f"SELECT e.id, {RAW} FROM events e").fetchall():
                text = extract(parse(raw.encode()))[2]
                if text and text.strip():
                    conn.execute("INSERT INTO search_tools (rowid, text) VALUES (?, ?)", (i, text))
        conn.execute(f"PRAGMA user_version = {BEFORE}")
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_tool_text_matches_words_as_written_and_prose_by_stem(csmd: Csmd, projects: Path) -> None:
    append(projects / "p" / "s1.jsonl",
           record(prompt("u1", "s1", "2026-11-01T10:00:00.000Z", "why do the parsers fail"), newline=True)
           + record(response("a1", "s1", "2026-11-01T10:00:01.000Z", {
               "id": "m1", "model": "claude-opus-4-6", "content": [
                   {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "make running-parsers"}}]}),
               newline=True))
    csmd.start()
    roles = lambda q: sorted(h["role"] for h in csm_json("query", "search", q, "--include-tools"))  # noqa: E731
    assert roles("parser") == ["user"], "prose is stemmed: parser finds parsers; tool text is not"
    assert roles("parsers") == ["tool", "user"]
    assert roles("parser*") == ["tool", "user"], "a prefix finds the longer forms in tool text"
    assert roles("run") == [], "no stem of running in tool text"
    hits = csm_json("query", "search", '"running-parsers"', "--include-tools")
    assert [h["role"] for h in hits] == ["tool"] and "«running-parsers»" in hits[0]["snippet"], hits
    # Merges of 16 segments (a third less CPU for a large catch-up), a whole level at once only past 64 (each
    # commit stays short): the table's own settings, so everyday appends keep them.
    assert dict(db_rows(csmd.tmp / "data" / "csm" / "csm.db", "SELECT k, v FROM search_tools_config WHERE k LIKE "
                        "'%merge'")) == {"automerge": 16, "crisismerge": 64}


def test_an_earlier_database_has_its_tool_text_rebuilt_unstemmed(tmp_path: Path, projects: Path, db: Path) -> None:
    """Main-file and archived lines alike: every tool word found once, the unused index gone."""
    old, new = projects / "p" / "old.jsonl", projects / "p" / "new.jsonl"
    old.parent.mkdir()
    old.write_bytes(b"".join(tool_line(i, "old", "2025-01-10T10:00:00.000Z") for i in range(300)))
    new.write_bytes(b"".join(tool_line(i, "new", "2026-11-10T10:00:00.000Z") for i in range(300, 700)))
    os.utime(old, (1736503200, 1736503200))  # 2025-01-10: the old session's file is as old as its lines
    new_session_line = record(prompt("u-new", "new", "2026-11-10T10:00:01.000Z", "running parsers"), newline=True)
    d = Csmd(tmp_path).start()
    r = run_csm("archive", "--before", "2026-01-01", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["sessions"] == 1, r.stdout + r.stderr
    assert d.stop() == 0
    expected = {**expected_words(db), **{f"toolword{i}": None for i in range(300)}}  # archived ids: read below
    assert len(expected) == 700 and db_rows(db, "SELECT count(*) FROM events") == [(400,)]
    downgrade(db)
    assert tool_words(db) and "search_tools_archived" not in str(db_rows(db, "SELECT name FROM sqlite_master"))

    d = Csmd(tmp_path).start()
    try:
        wait_for(lambda: db_rows(db, "SELECT (SELECT count(*) FROM search_tools_pending) + "
                                     "(SELECT count(*) FROM search_tools_archived)") == [(0,)], 30, "the rebuild")
        append(new, new_session_line)
        wait_for(lambda: csm_json("query", "search", "parsers"), what="a new line indexed after the rebuild")
        assert "the tool-text search index is rebuilt without stemming from the stored lines: 400 messages and " \
               "300 archived lines" in d.log()
        words = tool_words(db)
        assert words.keys() == expected.keys(), "every tool word, main and archived"
        assert all(len(ids) == 1 for ids in words.values()), "each in one line"
        main_ids = {w: ids for w, ids in words.items() if expected[w] is not None}
        assert main_ids == {w: ids for w, ids in expected.items() if ids is not None}
        assert documents(db) == (700, 700), "each line indexed once"
        hits = csm_json("query", "search", "toolword42", "--include-tools")
        assert [(h["session_id"], h["role"]) for h in hits] == [("old", "tool")], "an archived line's hit"
        assert "«toolword42»" in hits[0]["snippet"]
        assert db_rows(db, "SELECT count(*) FROM sqlite_master WHERE name = 'idx_session_timestamp'") == [(0,)]
    finally:
        assert d.stop() == 0


def test_the_rebuild_is_bounded_and_resumes_after_sigkill(tmp_path: Path, projects: Path, db: Path) -> None:
    """The rebuild commits BACKFILL_BATCH lines at a time (a hint waits for one batch at most); a kill in the
    middle loses nothing and doubles nothing: the next start goes on from the last commit."""
    lines = 10 * BACKFILL_BATCH
    f = projects / "p" / "big.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(tool_line(i, "big", "2026-11-10T10:00:00.000Z") for i in range(lines)))
    d = Csmd(tmp_path).start()
    assert d.stop() == 0
    expected = expected_words(db)
    downgrade(db, stemmed_index=False)

    d.start(wait=False)
    seen: set[int] = set()

    def midway() -> bool:
        try:
            n = db_rows(db, "SELECT count(*) FROM search_tools_pending")[0][0]
        except sqlite3.Error:  # not migrated yet
            return False
        seen.add(n)
        return 0 < n < lines

    wait_for(midway, 60, "the rebuild to be half-way")
    d.kill()
    left = db_rows(db, "SELECT count(*) FROM search_tools_pending")[0][0]
    seen.add(left)
    assert 0 < left < lines
    assert seen <= set(range(0, lines + 1, BACKFILL_BATCH)), f"each transaction is one batch of lines: {sorted(seen)}"
    assert documents(db) == (lines - left, lines - left), "what was committed, once"

    d.start()
    try:
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM search_tools_pending") == [(0,)], 60, "the rest")
        assert tool_words(db) == expected, "every tool word, in its line"
        assert documents(db) == (lines, lines), "nothing indexed twice across the kill"
    finally:
        assert d.stop() == 0

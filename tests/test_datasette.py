"""The archive opens in datasette with its full-text search recognised (issue 15), the real datasette:
its ``detect_fts`` finds ``search_text`` for ``message_text``, and its search box finds a word csmd
indexed, on a fresh database and on one migrated from m004's definition."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from csmtest import WITHOUT_ARCHIVES, WITHOUT_COMPRESSED_LINES, Csmd, run_csm, wait_for

from csm.daemon.migrations import MIGRATIONS


def session(projects: Path, word: str) -> None:
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    with open(f, "ab") as out:
        out.write(json.dumps({"type": "user", "uuid": word, "sessionId": "s1", "timestamp": "2026-11-01T10:00:00Z",
                              "message": {"role": "user", "content": f"where is the {word} today"}}).encode() + b"\n")


def searched(db: Path, word: str) -> list[Any]:
    """message_text rows datasette's search box finds for ``word`` (its JSON API, in-process)."""
    from datasette.app import Datasette

    async def ask() -> Any:
        ds = Datasette([str(db)])
        r = await ds.client.get(f"/{db.stem}/message_text.json?_search={word}&_shape=objects")
        assert r.status_code == 200, r.text
        return r.json()["rows"]

    return [row["text"] for row in asyncio.run(ask())]


def detected(db: Path) -> str | None:
    from datasette.utils import detect_fts

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return detect_fts(conn, "message_text")  # type: ignore[no-any-return]
    finally:
        conn.close()


def test_datasette_finds_the_full_text_index(csmd: Csmd, projects: Path, db: Path) -> None:
    session(projects, "zebrafish")
    csmd.start()
    wait_for(lambda: "zebrafish" in run_csm("query", "search", "zebrafish").stdout, what="the word indexed")
    assert run_csm("db", "path").stdout.strip() == str(db), "README's command opens this file"
    assert detected(db) == "search_text"
    assert searched(db, "zebrafish") == ["where is the zebrafish today"]
    assert searched(db, "unicorn") == []


def test_an_m004_database_is_migrated_and_keeps_its_index(csmd: Csmd, projects: Path, db: Path) -> None:
    session(projects, "axolotl")
    csmd.start()
    wait_for(lambda: "axolotl" in run_csm("query", "search", "axolotl").stdout, what="the word indexed")
    csmd.stop()
    # As a database written before the migration for datasette: the old definition with single quotes,
    # which datasette does not read, and none of the later migrations' tables.
    before = [name for name, _ in MIGRATIONS].index("search_for_datasette")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(
        f"BEGIN; {WITHOUT_ARCHIVES} {WITHOUT_COMPRESSED_LINES} DROP TABLE search_text; CREATE VIRTUAL TABLE search_text USING fts5(text, "
        "content='message_text', content_rowid='event_id', tokenize='porter unicode61 remove_diacritics 2'); "
        "INSERT INTO search_text(search_text) VALUES ('rebuild'); "
        f"PRAGMA user_version = {before}; COMMIT;")
    conn.close()
    assert detected(db) is None, "the old definition is not recognised"
    session(projects, "capybara")
    csmd.start()
    assert detected(db) == "search_text"
    wait_for(lambda: "capybara" in run_csm("query", "search", "capybara").stdout, what="new lines indexed")
    assert "axolotl" in run_csm("query", "search", "axolotl").stdout, "the rebuilt index keeps the old lines"
    assert searched(db, "axolotl") == ["where is the axolotl today"]
    tools = sqlite3.connect(db).execute("SELECT sql FROM sqlite_master WHERE name = 'search_tools'").fetchone()[0]
    assert "content=''" in tools, "the contentless tool index is left as it was"

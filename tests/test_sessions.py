"""The ``sessions`` and ``projects`` views against real transcripts, figures recomputed from the files."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from csmtest import REAL, Csmd, db_rows, sync_now


def expected_session(path: Path) -> dict[str, Any]:
    """What the view must say of one file, computed here from its lines."""
    lines = []
    for raw in path.read_bytes().split(b"\n")[:-1]:
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            lines.append(obj)
    stamps = [o["timestamp"] for o in lines if isinstance(o.get("timestamp"), str)]
    cwds = [o["cwd"] for o in lines if o.get("cwd")]
    models = {o["message"]["model"] for o in lines if o.get("type") == "assistant" and isinstance(o.get("message"), dict)
              and o["message"].get("model") and not o["message"]["model"].startswith("<")}
    return {
        "lines": len(lines),
        "messages": sum(1 for o in lines if o.get("type") in ("user", "assistant") and not o.get("isMeta")),
        "started": min(stamps, default=None),
        "last_activity": max(stamps, default=None),
        "cwd": cwds[-1] if cwds else None,
        "models": models,
    }


def view(db: Path, name: str) -> dict[str, dict[str, Any]]:
    rows = db_rows(db, f"SELECT * FROM {name}")
    cols = [r[1] for r in db_rows(db, f"PRAGMA table_info({name})")]
    key = cols[0]
    return {r[0]: dict(zip(cols, r)) for r in rows} if key else {}


def test_sessions_and_projects_of_the_real_fixtures(tmp_path: Path, db: Path) -> None:
    d = Csmd(tmp_path, ["--root", str(REAL)]).start()
    try:
        sessions = view(db, "sessions")
        projects = view(db, "projects")
    finally:
        assert d.stop() == 0
    files = [f for f in sorted(REAL.rglob("*.jsonl")) if f.stat().st_size]
    assert set(sessions) == {f.stem for f in files}  # the 0-byte file has no lines, so no session yet
    per_project: dict[str, list[str]] = defaultdict(list)
    for f in files:
        s = sessions[f.stem]
        e = expected_session(f)
        got = {k: s[k] for k in ("lines", "messages", "started", "last_activity", "cwd")}
        got["models"] = set(s["models"].split(",")) if s["models"] else set()
        assert got == e, f
        assert s["file_present"] == 1 and s["project"] == f.relative_to(REAL).parts[0]
        per_project[s["project"]].append(f.stem)

    # Subagents: nested ones name their parent by folder, flat (2.0-era) ones by their lines' sessionId.
    nested = sessions["agent-afc096d"]
    assert (nested["parent_session_id"], nested["is_subagent"]) == ("6c2214d7-b87e-4432-8e41-22ba294ea584", 1)
    assert nested["title"].startswith("Explore the Elixir/Phoenix project structure")
    assert sessions["agent-a2271d1"]["parent_session_id"] == "29ccd257-68b1-427f-ae5f-6524b7cb6f20"
    flat = sessions["agent-3be551df"]
    assert (flat["parent_session_id"], flat["is_subagent"], flat["title"]) == (
        "58edcfae-5291-436c-91e4-54fbb188a0ca", 1, "Warmup")
    main = sessions["29ccd257-68b1-427f-ae5f-6524b7cb6f20"]
    assert (main["parent_session_id"], main["is_subagent"]) == (None, 0)

    # Titles: a summary line, else the first prompt typed (not a slash command, meta line or interruption).
    assert sessions["4e27c414-a885-46a0-b5c8-d58e1417377d"]["title"] == "TUI Cache Handling: Empty State Fix"
    assert sessions["short"]["title"] == "mix phx.server doesnt seem to start"
    assert sessions["b45ad5d8-81fb-4bcb-baba-19d9f503d731"]["title"].startswith("Can you please help to use")
    assert sessions["subagent"]["title"] == "create the beads"  # after a slash command and an interruption
    assert sessions["a95fea4a-b88a-4e49-ac07-4cc323d8700c"]["title"] is None  # snapshots only

    for name, keys in per_project.items():
        p = projects[name]
        assert p["sessions"] == len(keys)
        assert p["lines"] == sum(sessions[k]["lines"] for k in keys)
        assert p["messages"] == sum(sessions[k]["messages"] for k in keys)
        assert p["last_activity"] == max(s for k in keys if (s := sessions[k]["last_activity"]))


def test_title_precedence_custom_then_ai_then_summary_then_prompt(csmd: Csmd, projects: Path, db: Path) -> None:
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir()

    def add(*objs: dict[str, Any]) -> str | None:
        with open(f, "a") as out:
            out.writelines(json.dumps(o) + "\n" for o in objs)
        sync_now()
        return db_rows(db, "SELECT title FROM sessions WHERE session_id = 's1'")[0][0]

    csmd.start()
    assert add({"type": "user", "isMeta": True, "message": {"role": "user", "content": "meta"}},
               {"type": "user", "message": {"role": "user", "content": "<command-name>/clear</command-name>"}},
               {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": "first  real\nprompt"}]}},
               {"type": "user", "message": {"role": "user", "content": "second prompt"}}) == "first real prompt"
    assert add({"type": "summary", "summary": "a summary", "leafUuid": "x"}) == "a summary"
    assert add({"type": "ai-title", "aiTitle": "AI one"}) == "AI one"
    assert add({"type": "summary", "summary": "later summary"}) == "AI one"
    assert add({"type": "ai-title", "aiTitle": "AI two"}) == "AI two"
    assert add({"type": "custom-title", "customTitle": "Mine"}) == "Mine"
    assert add({"type": "ai-title", "aiTitle": "AI three"}) == "Mine"

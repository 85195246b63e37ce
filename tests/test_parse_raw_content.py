"""message.content stays undecoded on the typed path, and first prompts still become titles.

Regression: with ``content: Raw | None`` msgspec rejected every line that had content, and
the generic fallback decoded the whole line again (and lost the content, so no title was
ever taken from a first prompt).
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from csm.daemon.parse import parse, prompt_text
from csmtest import Csmd, csm_json, sql, wait_for


def test_content_is_kept_raw_byte_for_byte() -> None:
    # The spacing proves the typed pass kept the bytes: a generic re-encode would drop it.
    content = b'[ {"type": "text", "text": "fix the parser"} ]'
    line = b'{"type":"user","message":{"role":"user","content":' + content + b'},"uuid":"u1"}'
    view = parse(line)
    assert view.message is not None
    assert isinstance(view.message.content, msgspec.Raw)
    assert bytes(view.message.content) == content
    assert prompt_text(view) == "fix the parser"


def test_absent_content_and_lenient_lines() -> None:
    assert prompt_text(parse(b'{"type":"user","message":{"role":"user"}}')) is None
    # role of the wrong type: the lenient path keeps the line and its content
    view = parse(b'{"type":"user","message":{"role":5,"content":"typed by hand"}}')
    assert view.message is not None and view.message.role is None
    assert prompt_text(view) == "typed by hand"


def test_first_prompt_is_the_session_title(csmd: Csmd, projects: Path) -> None:
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir(parents=True)
    lines = [
        {"type": "user", "uuid": "u0", "sessionId": "s1", "timestamp": "2026-11-01T10:00:00.000Z",
         "message": {"role": "user", "content": [{"type": "text", "text": "  why is   the build red? "}]}},
        {"type": "assistant", "uuid": "a0", "parentUuid": "u0", "sessionId": "s1",
         "timestamp": "2026-11-01T10:00:01.000Z",
         "message": {"id": "m1", "role": "assistant", "model": "claude-opus-4-6",
                     "content": [{"type": "text", "text": "Looking."}]}},
    ]
    f.write_text("".join(json.dumps(o) + "\n" for o in lines))
    csmd.start()
    csm_json("sync", "--now")
    wait_for(lambda: sql("SELECT title FROM sessions WHERE session_id = 's1'"), what="the session row")
    assert sql("SELECT title, models FROM sessions WHERE session_id = 's1'") == [
        {"title": "why is the build red?", "models": "claude-opus-4-6"}
    ]

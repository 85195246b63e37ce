"""Browsing against a real csmd and the real fixtures: sessions, show, search, messages, export, watch."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from lines import prompt, record, response
from csmtest import REAL, Csmd, csm_json, db_rows, run_csm, scalar, sql, wait_for

SUB_PARENT = "29ccd257-68b1-427f-ae5f-6524b7cb6f20"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Human output shows local time; tests pin it."""
    monkeypatch.setenv("TZ", "UTC")


@pytest.fixture
def real(csmd: Csmd, projects: Path) -> Path:
    """The real fixtures as a projects/ folder, ingested by a running csmd."""
    shutil.copytree(REAL, projects, dirs_exist_ok=True)
    (projects / "SOURCES.md").unlink()
    csmd.start()
    return projects


def user(uuid: str, session: str, ts: str, content: Any) -> bytes:
    return record(prompt(uuid, session, ts, content), newline=True)


def assistant(uuid: str, session: str, ts: str, mid: str, *blocks: dict[str, Any]) -> bytes:
    return record(response(uuid, session, ts, {"id": mid, "model": "claude-test-1", "content": list(blocks)},
                           f"req_{mid}"), newline=True)


def append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(data)


def fail(*args: str) -> subprocess.CompletedProcess[str]:
    r = run_csm(*args)
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    return r


# --- sessions ------------------------------------------------------------------------------


def test_sessions_lists_by_last_activity_with_filters(real: Path, db: Path) -> None:
    rows = csm_json("query", "sessions")
    assert list(rows[0]) == ["session_id", "project", "title", "started", "last_activity", "messages", "tokens",
                             "cost_usd", "file_present", "models", "subagents", "cwd", "resume"]
    last = [r["last_activity"] for r in rows if r["last_activity"]]
    assert last == sorted(last, reverse=True) and rows[0]["session_id"] == "03eb5929-52b3-4b13-ada3-b93ae35806b8"
    ids = {r["session_id"] for r in rows}
    assert SUB_PARENT in ids and "agent-a2271d1" not in ids, "a subagent nests under its parent"
    assert "agent-afc096d" in ids, "an orphan subagent (its parent file was never kept) is listed"
    short = next(r for r in rows if r["session_id"] == "short")
    assert (short["title"], short["messages"], short["file_present"]) == ("mix phx.server doesnt seem to start", 9, 1)

    spotter = csm_json("query", "sessions", "--project", "spotter")
    assert spotter and {r["project"] for r in spotter} == {"spotter"}
    day = csm_json("query", "sessions", "--since", "2026-02-10", "--until", "2026-02-10")
    assert [r["session_id"] for r in day] == ["tool_heavy", "agent-afc096d", "subagent", "short"]
    assert len(csm_json("query", "sessions", "-n", "2")) == 2
    csv_rows = list(csv.reader(run_csm("query", "sessions", "-p", "spotter", "-n", "1", "--csv").stdout.splitlines()))
    assert csv_rows == [list(spotter[0]), [str(v) if v is not None else "" for v in spotter[0].values()]]
    assert csm_json("query", "sessions", "--since", "1d") == []

    # Tokens and cost come from the usage view, the subagent's included in its parent's row.
    want = db_rows(db, "SELECT sum(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens), "
                       "sum(cost_usd) FROM usage WHERE session_id IN (?, ?)", SUB_PARENT, "agent-a2271d1")[0]
    parent = next(r for r in rows if r["session_id"] == SUB_PARENT)
    assert want[0] > 0 and (parent["tokens"], parent["cost_usd"]) == (want[0], pytest.approx(want[1]))
    assert db_rows(db, "SELECT count(*) FROM usage WHERE session_id = 'agent-a2271d1'")[0][0] > 0

    (real / "spotter" / "short.jsonl").unlink()
    wait_for(lambda: not next(r for r in csm_json("query", "sessions") if r["session_id"] == "short")["file_present"],
             what="short marked gone")
    table = run_csm("query", "sessions", "-p", "spotter").stdout.splitlines()
    assert table[0].split()[:3] == ["session", "project", "title"]
    assert next(x for x in table if x.startswith("short ")).rstrip().endswith("gone")
    shown = run_csm("query", "show", "short").stdout
    assert "source file gone (archived)" in shown and "mix phx.server doesnt seem to start" in shown
    r = run_csm("query", "sessions", "--since", "last tuesday")
    assert r.returncode == 2 and "Invalid value for '--since': 'last tuesday' is not a time" in r.stderr


# --- show ----------------------------------------------------------------------------------


def test_show_prefix_merging_nesting_and_full(real: Path) -> None:
    t = csm_json("query", "show", "29cc")
    assert t["session"]["session_id"] == SUB_PARENT
    assert t["session"]["resume"] == f"cd '{t['session']['cwd']}' && claude --resume {SUB_PARENT}"
    kinds = [(e["kind"], e.get("depth", 0)) for e in t["entries"]]
    task = next(i for i, e in enumerate(t["entries"]) if e.get("tool") == "Task")
    assert kinds[task + 1] == ("subagent", 0) and t["entries"][task + 1]["session_id"] == "agent-a2271d1"
    assert kinds[task + 2] == ("user", 1), "the subagent's conversation follows, one level deeper"
    nested = [e for e in t["entries"] if e.get("depth") == 1]
    sub = [json.loads(x) for x in (real / "-src-experiments-claude_p" / SUB_PARENT / "subagents" /
                                   "agent-a2271d1.jsonl").read_text().splitlines()]
    blocks = [(x["message"]["id"], b["type"]) for x in sub if x["type"] == "assistant" for b in x["message"]["content"]]
    calls = sum(1 for _, kind in blocks if kind == "tool_use")
    answers = len({mid for mid, kind in blocks if kind == "text"})
    assert [e["kind"] for e in nested].count("tool") == calls == 24
    assert [e["kind"] for e in nested].count("assistant") == answers and len(nested) == 1 + answers + calls
    assert kinds[-1] == ("assistant", 0), "the parent's answer after the subagent returns"

    # One response over five lines (text, thinking, text, tool_use, tool_use): one answer, two calls.
    s = csm_json("query", "show", "short")["entries"]
    assert [e["kind"] for e in s[:4]] == ["user", "assistant", "tool", "tool"]
    assert s[1]["text"] == "Let me check the project structure and try running the server to see the error."
    assert (s[2]["tool"], s[2]["detail"], s[2]["is_error"]) == ("Bash", "mix phx.server 2>&1 | head -80", True)
    assert (s[2]["input"], s[2]["output"]) == (None, None)  # every key is printed; without --full these are empty
    full = csm_json("query", "show", "short", "--full")["entries"]
    assert json.loads(full[2]["input"])["timeout"] == 30000
    assert full[2]["output"].startswith("The user doesn't want to proceed with this tool use.")

    text = run_csm("query", "show", "short").stdout
    assert "21:12:01  → Bash mix phx.server 2>&1 | head -80 (error)" in text and "resume   cd '/home/marco/projects/spotter' && claude --resume short" in text
    nested_text = run_csm("query", "show", SUB_PARENT).stdout
    assert "┌ subagent agent-a2271d1" in nested_text and "│ 17:34:49  assistant · claude-haiku-4-5-20251001" in nested_text
    assert "a2271d1" in run_csm("query", "show", "a2271d1").stdout.splitlines()[0], "agent- may be left out"

    r = fail("query", "show", "agent-a")
    assert r.returncode == 4 and "ambiguous" in r.stderr
    assert "agent-a2271d1" in r.stderr and "agent-acompact-f46190" in r.stderr and "agent-afc096d" in r.stderr
    r = fail("query", "show", "zzz")
    assert r.returncode == 5 and "no session matches 'zzz'" in r.stderr


def test_show_sends_a_page_read_only_as_far_as_it_reaches_and_equal_to_the_whole(csmd: Csmd, projects: Path) -> None:
    """``Show(offset, limit)``: the same entries as the whole conversation's slice (calls with their results),
    the first pages read without the rest (``complete`` false); ``at`` opens the page holding the hit."""
    from csm.client.transport import conversation, request
    from csm.shared import protocol

    lines = b""
    for n in range(150):
        ts = f"2026-11-02T10:{n // 60:02d}:{n % 60:02d}.000Z"
        lines += (user(f"u{n}", "paged", ts, f"prompt {n}")
                  + assistant(f"a{n}", "paged", ts, f"m{n}", {"type": "tool_use", "id": f"t{n}", "name": "Bash",
                                                             "input": {"command": f"echo {n}"}})
                  + user(f"r{n}", "paged", ts, [{"type": "tool_result", "tool_use_id": f"t{n}", "content": f"{n}"}])
                  + assistant(f"b{n}", "paged", ts, f"n{n}", {"type": "text", "text": f"answer {n}"}))
    append(projects / "p" / "paged.jsonl", lines)
    csmd.start()
    assert run_csm("sync", "--now").returncode == 0

    def show(**kw: Any) -> protocol.Transcript:
        t = request(protocol.Show(session="paged", full=True, **kw), timeout_s=30)
        assert isinstance(t, protocol.Transcript)
        return t

    whole = conversation(protocol.Show(session="paged", full=True))
    assert (whole.total, whole.complete, len(whole.entries)) == (450, True, 450)
    for offset, limit, complete in ((0, 10, False), (0, 200, False), (30, 40, False), (200, 200, True),
                                    (400, 200, True), (449, 1, True)):
        t = show(offset=offset, limit=limit)
        assert t.entries == whole.entries[offset:offset + limit], (offset, limit)
        assert (t.offset, t.complete) == (offset, complete), (offset, limit)
    tail = show(offset=10, limit=10).entries[-1]
    assert (tail.tool, tail.output) == ("Bash", "6"), "the page's last call has its result"
    last = show(offset=9000, limit=200)
    assert (last.offset, last.entries) == (400, whole.entries[400:])
    hit = show(offset=0, limit=100, at="2026-11-02T10:02:00.000Z")
    assert (hit.hit, hit.offset, hit.entries[hit.hit - hit.offset].text) == (360, 300, "prompt 120")


def test_a_call_whose_result_comes_too_late_is_settled_alike_on_every_path(csmd: Csmd, projects: Path) -> None:
    """A call open for ``SETTLE_LINES`` conversation lines is handed out without its result, which is then an
    entry of its own; progress lines do not count. The whole conversation, a page and the last page agree."""
    from csm.client.transport import conversation, request
    from csm.daemon.conversation import SETTLE_LINES
    from csm.shared import protocol

    ts = "2026-11-02T10:00:00.000Z"
    late = (assistant("a0", "late", ts, "m0", {"type": "tool_use", "id": "t0", "name": "Bash",
                                                "input": {"command": "sleep 1000"}})
            + assistant("a1", "late", ts, "m1", {"type": "tool_use", "id": "t1", "name": "Bash",
                                                  "input": {"command": "make"}})
            + b"".join(record({"type": "progress", "uuid": f"p{n}", "sessionId": "late", "timestamp": ts,
                               "data": {"type": "bash_progress"}}, newline=True) for n in range(300))
            + user("r1", "late", ts, [{"type": "tool_result", "tool_use_id": "t1", "content": "made"}])
            + b"".join(user(f"u{n}", "late", ts, f"prompt {n}") for n in range(SETTLE_LINES))
            + user("r0", "late", ts, [{"type": "tool_result", "tool_use_id": "t0", "content": "slept"}]))
    append(projects / "p" / "late.jsonl", late)
    csmd.start()
    assert run_csm("sync", "--now").returncode == 0
    whole = conversation(protocol.Show(session="late", full=True)).entries
    assert [(e.kind, e.output) for e in whole[:2]] == [("tool", None), ("tool", "made")], "progress lines are no clock"
    assert len(whole) == 3 + SETTLE_LINES and (whole[-1].kind, whole[-1].output) == ("tool_result", "slept")
    for offset in (0, 50, 10**6):
        page = request(protocol.Show(session="late", full=True, offset=offset, limit=40), timeout_s=30)
        assert isinstance(page, protocol.Transcript)
        assert page.entries == whole[page.offset:page.offset + 40], offset


def test_split_response_merged_in_file_order_and_messages_view(csmd: Csmd, projects: Path) -> None:
    f = projects / "p" / "s1.jsonl"
    append(f, user("u1", "s1", "2026-11-01T10:00:00.000Z", "first question")
           + assistant("a1", "s1", "2026-11-01T10:00:01.000Z", "m1", {"type": "text", "text": "part one"})
           + assistant("a2", "s1", "2026-11-01T10:00:02.000Z", "m1",
                       {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "/x.py"}})
           + assistant("a3", "s1", "2026-11-01T10:00:03.000Z", "m1", {"type": "text", "text": "part two"})
           + user("u2", "s1", "2026-11-01T10:00:04.000Z",
                  [{"type": "tool_result", "tool_use_id": "t1", "content": "print(1)"}]))
    csmd.start()
    e = csm_json("query", "show", "s1", "--full")["entries"]
    assert [(x["kind"], x.get("text", "")) for x in e] == [("user", "first question"), ("assistant", "part one\n\npart two"),
                                                   ("tool", "")]
    assert (e[2]["detail"], e[2]["output"]) == ("/x.py", "print(1)")
    rows = sql("SELECT session_id, timestamp, role, text, message_id FROM messages ORDER BY timestamp")
    assert rows == [
        {"session_id": "s1", "timestamp": "2026-11-01T10:00:00.000Z", "role": "user", "text": "first question",
         "message_id": None},
        {"session_id": "s1", "timestamp": "2026-11-01T10:00:01.000Z", "role": "assistant",
         "text": "part one\npart two", "message_id": "m1"},
    ]


# --- search --------------------------------------------------------------------------------


def test_search_ranks_highlights_and_filters(real: Path) -> None:
    hits = csm_json("query", "search", "phoenix")
    assert hits[0]["session_id"] == "tool_heavy" and hits[0]["role"] == "user"
    assert hits[0]["snippet"] == "start «phoenix» in background"
    assert hits[0]["resume"] == "cd '/home/marco/projects/spotter' && claude --resume tool_heavy"
    assert hits[0]["cwd"] == "/home/marco/projects/spotter"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    sub = next(h for h in hits if h["session_id"] == "agent-afc096d")
    assert sub["resume"].endswith(" && claude --resume 6c2214d7-b87e-4432-8e41-22ba294ea584"), "a subagent resumes its parent"

    # Tool output is searched only when asked.
    assert csm_json("query", "search", "elixirforum") == []
    tools = csm_json("query", "search", "elixirforum", "--include-tools")
    assert tools and {h["role"] for h in tools} == {"tool"} and "«elixirforum»" in tools[0]["snippet"]

    assert {h["project"] for h in csm_json("query", "search", "the", "-p", "dain", "-n", "50")} == {
        "-Users-dain-workspace-claude-code-log-sample"}
    assert {h["timestamp"][:10] for h in csm_json("query", "search", "the", "--since", "2026-02-16", "-n", "50")} \
        <= {"2026-02-16", "2026-02-17"}
    assert csm_json("query", "search", "phoenix NOT background")[0]["session_id"] != "tool_heavy"
    assert csm_json("query", "search", "phx.server")[0]["snippet"] == "mix «phx.server» doesnt seem to start"

    human = run_csm("query", "search", "phoenix", "-n", "1").stdout.splitlines()
    assert human[0].split() == ["2026-02-10", "22:57", "user", "tool_heavy", "spotter"]
    assert human[1].strip() == "start «phoenix» in background"
    assert human[2].strip() == "cd '/home/marco/projects/spotter' && claude --resume tool_heavy"

    r = fail("query", "search", '"unbalanced')
    assert r.returncode == 4 and r.stderr.startswith("csm: search syntax error in") and "quote" in r.stderr


def test_search_index_follows_appends_and_backfills(csmd: Csmd, projects: Path, db: Path) -> None:
    f = projects / "p" / "s1.jsonl"
    append(f, user("u1", "s1", "2026-11-01T10:00:00.000Z", "nothing here"))
    csmd.start()
    assert csm_json("query", "search", "xylophone") == []
    append(f, assistant("a1", "s1", "2026-11-01T10:00:01.000Z", "m1", {"type": "text", "text": "a xylophone solo"}))
    wait_for(lambda: csm_json("query", "search", "xylophone"), what="the appended line to be searchable")

    # A database whose lines predate the index (as after the upgrade that adds it) is indexed at start.
    assert csmd.stop() == 0
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM message_text")
        conn.execute("INSERT INTO search_text(search_text) VALUES ('rebuild')")
        conn.execute("UPDATE search_backfill SET pending_below = (SELECT max(id) + 1 FROM events)")
    conn.close()
    csmd.start()
    assert csm_json("query", "search", "xylophone")[0]["snippet"] == "a «xylophone» solo"
    assert db_rows(db, "SELECT pending_below FROM search_backfill") == [(0,)]
    assert scalar("SELECT count(*) FROM messages") == 2


def test_tool_text_of_a_large_backlog_is_indexed_after_it(csmd: Csmd, projects: Path, tmp_path: Path,
                                                          db: Path) -> None:
    (tmp_path / "config" / "csm").mkdir(parents=True)
    (tmp_path / "config" / "csm" / "config.toml").write_text("search_defer_tools_bytes = 0\n")
    shutil.copytree(REAL / "spotter", projects / "spotter")
    csmd.start()
    wait_for(lambda: db_rows(db, "SELECT count(*) FROM search_tools_pending") == [(0,)], what="the tool text pass")
    assert db_rows(db, "SELECT count(*) FROM search_text_pending") == [(0,)], "the prose is indexed first"
    assert csm_json("query", "search", "phoenix")[0]["snippet"] == "start «phoenix» in background"
    assert "indexed the prose of" in csmd.log()
    assert "indexed the tool text of" in csmd.log()
    hits = csm_json("query", "search", "elixirforum", "--include-tools")
    assert hits and hits[0]["role"] == "tool" and "«elixirforum»" in hits[0]["snippet"]


# --- export --------------------------------------------------------------------------------


def test_export_markdown_and_html(csmd: Csmd, projects: Path, tmp_path: Path) -> None:
    shutil.copytree(REAL / "-src-experiments-claude_p", projects / "-src-experiments-claude_p")
    f = projects / "p" / "x1.jsonl"
    evil = "<script>alert(1)</script> & ```fence``` in text"
    append(f, user("u1", "x1", "2026-11-01T10:00:00.000Z", evil)
           + assistant("a1", "x1", "2026-11-01T10:00:01.000Z", "m1",
                       {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "cat a.md"}})
           + user("u2", "x1", "2026-11-01T10:00:02.000Z",
                  [{"type": "tool_result", "tool_use_id": "t1", "content": "```py\nx = 1\n```"}]))
    csmd.start()
    out = tmp_path / "x1.html"
    r = run_csm("export", "x1", "--format", "html", "-o", str(out))
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<style>" in page and "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; <code>fence</code> in text" in page, "Markdown, HTML off"
    assert '<b>Bash</b> <span class="detail">cat a.md</span>' in page and "x = 1" in page

    md = run_csm("export", "x1", "--format", "markdown").stdout
    assert md.startswith("# x1\n")
    assert "\n\\<script\\>alert(1)\\</script\\> & \\`\\`\\`fence\\`\\`\\` in text\n" in md, "user text is escaped"
    assert "- **Bash** `cat a.md`" in md
    assert "  ````\n  ```py\n  x = 1\n  ```\n  ````" in md, "a fence longer than the backticks inside"

    nested = run_csm("export", "29cc", "--format", "markdown").stdout
    assert "### Subagent `agent-a2271d1`" in nested and "> #### Assistant · 2026-01-23 17:34:49" in nested
    page = run_csm("export", "29cc", "--format", "html").stdout
    assert page.count('class="entry subagent') == 1 and 'class="entry user depth-1' in page
    r = fail("export", "nope")
    assert r.returncode == 5


# --- watch ---------------------------------------------------------------------------------


class Watch:
    """``csm watch`` as a subprocess, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "csm.client", "watch", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True).start()
        wait_for(lambda: any("watching" in x for x in self.err), what="csm watch to subscribe")

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(10)


def test_watch_streams_new_messages_and_stops_cleanly(csmd: Csmd, projects: Path) -> None:
    f = projects / "p" / "w1.jsonl"
    append(f, user("u0", "w1", "2026-11-01T10:00:00.000Z", "before the watch"))
    append(projects / "q" / "w2.jsonl", user("v0", "w2", "2026-11-01T10:00:00.000Z", "other"))
    csmd.start()
    r = fail("watch", "zzz")
    assert r.returncode == 5 and "no session matches 'zzz'" in r.stderr
    everything = Watch()
    one = Watch("w1")
    append(f, user("u1", "w1", "2026-11-01T10:00:01.000Z", "hello watcher")
           + assistant("a1", "w1", "2026-11-01T10:00:02.000Z", "m1",
                       {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "make test"}}))
    append(projects / "q" / "w2.jsonl", user("v1", "w2", "2026-11-01T10:00:03.000Z", "elsewhere"))
    wait_for(lambda: any("elsewhere" in x for x in everything.out), what="the other session in the full watch")
    wait_for(lambda: any("make test" in x for x in one.out), what="the tool call")
    assert "".join(one.out).splitlines() == ["10:00:01  w1 user", "          hello watcher", "10:00:02  w1 → Bash make test"]
    assert not any("before the watch" in x for x in everything.out), "only what is ingested from now on"
    assert everything.stop() in (0, 130) and one.stop() in (0, 130)
    for w in (everything, one):
        assert not any("Traceback" in x for x in w.err), w.err

    # A subscriber that stops reading, or vanishes, never holds up ingestion, and is forgotten.
    stuck = Watch()
    stuck.proc.send_signal(signal.SIGSTOP)
    append(f, b"".join(user(f"s{i}", "w1", "2026-11-01T10:00:05.000Z", "x" * 2000) for i in range(3000)))
    wait_for(lambda: scalar("SELECT count(*) FROM lines WHERE session_id = 'w1'") == 3003, what="ingestion")
    stuck.proc.kill()
    stuck.proc.wait(10)
    wait_for(lambda: "watch: a subscriber went away (0 left)" in csmd.log(), what="the dead subscriber forgotten")

    # The daemon stopping ends a watch cleanly; a daemon that dies is noticed by the missing heartbeats.
    w = Watch("--project", "q")
    assert csmd.stop() == 0
    assert w.proc.wait(10) == 0 and any("csmd stopped" in x for x in w.err)
    csmd.start()
    w = Watch("--jsonl")
    append(f, user("u2", "w1", "2026-11-01T10:00:09.000Z", "as json"))
    wait_for(lambda: w.out, what="a JSON line")
    assert json.loads(w.out[0]) == {"kind": "user", "timestamp": "2026-11-01T10:00:09.000Z", "text": "as json",
                                    "model": None, "tool": None, "detail": None, "input": None, "output": None,
                                    "is_error": False, "session_id": "w1", "project": "p", "parent": None, "depth": 0,
                                    "thinking": None, "images": []}
    csmd.kill()
    assert w.proc.wait(15) == 3 and "stopped answering" in "".join(w.err)

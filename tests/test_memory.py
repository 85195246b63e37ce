"""csmd's memory stays bounded whatever a client or a line asks of it (issue 10, items 9-11).

Each test reads the real csmd's ``VmRSS``/``VmHWM`` from ``/proc/<pid>/status`` and asserts a
bound with a wide margin over what it measures (a fresh csmd is 30-40 MB); the bounds are about
memory, not time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from csmtest import Csmd, run_csm, scalar, sync_now, wait_for
from lines import prompt, record, response

T = TypeVar("T")


def vm(pid: int, key: str) -> float:
    """``VmRSS`` or ``VmHWM`` of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} for {pid}")


def pid(d: Csmd) -> int:
    assert d.proc is not None
    return d.proc.pid


def user(session: str, text: str, i: int) -> bytes:
    return json.dumps({"type": "user", "sessionId": session, "uuid": f"u{i}", "timestamp": "2026-11-01T10:00:00Z",
                       "message": {"role": "user", "content": text}}).encode() + b"\n"


def client(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "csm.client", *args], env=dict(os.environ), **kw)  # type: ignore


def watch_rss_while(d: Csmd, seconds: float) -> float:
    """csmd's largest RSS over ``seconds`` (the time a stopped client gives it to pile up data)."""
    peak = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, vm(pid(d), "VmRSS"))
        time.sleep(0.05)
    return peak


def test_a_stopped_export_client_pins_a_few_chunks_then_gets_every_byte(csmd: Csmd, projects: Path,
                                                                         tmp_path: Path) -> None:
    f = projects / "p" / "huge.jsonl"
    f.parent.mkdir()
    line = user("huge", "y" * 20_000, 0)
    with open(f, "wb") as out:
        for _ in range(6_000):  # 120 MB: a client that reads nothing must not make csmd hold it
            out.write(line)
    csmd.start()
    sync_now()
    assert scalar("SELECT count(*) FROM events") == 6_000
    out = tmp_path / "export.jsonl"
    with open(out, "wb") as sink:
        c = client("export", "--raw", "huge", stdout=sink, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: out.stat().st_size > 0, 20, "the first chunk")
            c.send_signal(signal.SIGSTOP)
            stopped = watch_rss_while(csmd, 3.0)
        finally:
            c.send_signal(signal.SIGCONT)
        assert c.wait(120) == 0, c.stderr.read() if c.stderr else ""
    assert stopped < 100, f"csmd reached {stopped:.0f} MB while the export client was stopped"
    assert out.read_bytes() == f.read_bytes()


def test_a_vanished_export_client_ends_its_export(csmd: Csmd, projects: Path) -> None:
    f = projects / "p" / "gone.jsonl"
    f.parent.mkdir()
    f.write_bytes(user("gone", "g" * 20_000, 0) * 1_000)  # 20 MB: many more chunks than csmd sends ahead
    csmd.start()
    sync_now()
    c = client("export", "--raw", "gone", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert c.stdout is not None
    c.stdout.read(1)
    c.kill()
    c.wait(10)
    wait_for(lambda: "export of gone: the client went away" in csmd.log(), 15, "the export to notice")


def test_a_stopped_watch_client_costs_a_bounded_budget(csmd: Csmd, projects: Path) -> None:
    f = projects / "p" / "w.jsonl"
    f.parent.mkdir()
    f.write_bytes(user("w", "first", 0))
    csmd.start()
    w = client("watch", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert w.stderr is not None
    try:
        assert b"watching" in w.stderr.readline()
        w.send_signal(signal.SIGSTOP)
        text = "z" * 1_900
        n = 1
        with open(f, "ab") as out:
            for _ in range(15):  # 60 MB in batches the watch hook sees one by one
                out.write(b"".join(user("w", text, n + i) for i in range(2_000)))
                out.flush()
                n += 2_000
                wait_for(lambda: scalar("SELECT count(*) FROM events") == n, 30, "the batch to be stored")
        rss = vm(pid(csmd), "VmRSS")
    finally:
        w.send_signal(signal.SIGCONT)
        w.kill()
        w.wait(10)
    assert rss < 75, f"csmd holds {rss:.0f} MB for a stopped watch client"


def test_a_long_line_is_stored_and_its_memory_given_back(csmd: Csmd, projects: Path) -> None:
    """A 24 MB prompt (real lines reach 10 MB): stored whole, csmd's peak a bounded multiple of
    the line, and its size back under 50 MB once the line is in."""
    f = projects / "p" / "long.jsonl"
    f.parent.mkdir()
    f.write_bytes(user("long", "first", 0))
    csmd.start()
    base = vm(pid(csmd), "VmRSS")
    words = "lorem ipsum dolor sit amet, " * ((24 << 20) // 28)
    line = user("long", words, 1)
    with open(f, "ab") as out:
        out.write(line)
    wait_for(lambda: scalar("SELECT count(*) FROM events") == 2, 60, "the long line")
    assert scalar("SELECT length(raw) FROM events WHERE uuid = 'u1'") == len(line) - 1
    wait_for(lambda: vm(pid(csmd), "VmRSS") < 50, 10, "csmd back under 50 MB")
    peak = vm(pid(csmd), "VmHWM") - base
    assert peak < 6 * len(line) / 2**20, f"{peak:.0f} MB over the baseline for a {len(line) >> 20} MB line"


def test_a_large_reply_is_given_back_once_it_is_answered(csmd: Csmd, projects: Path) -> None:
    """A reply is built whole (``query_max_bytes``): 4,000 values of 5 KB, three times over, left csmd
    14 MB larger for good, in free heap glibc kept. Once answered, what a request used goes back (its
    readers' caches, the heap trimmed soon after), so csmd returns to its size before the queries."""
    f = projects / "p" / "s.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(user("s", f"hello {i}", i) for i in range(3)))
    csmd.start()
    assert run_csm("query", "sql", "SELECT 1").returncode == 0  # the query thread and its reader exist
    base = vm(pid(csmd), "VmRSS")
    sql = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) "
           "SELECT printf('%.*c', 5000, 'x') || i FROM n")
    for _ in range(3):
        r = run_csm("query", "sql", sql, "--json")
        assert r.returncode == 0, r.stderr
        assert len(json.loads(r.stdout)) == 4000
    wait_for(lambda: vm(pid(csmd), "VmRSS") < base + 5, 10, f"csmd back near its {base:.1f} MB before the replies")


def test_the_heap_is_trimmed_at_most_once_a_second_however_often_it_is_owed() -> None:
    """Trimming walks the whole heap (1-2 ms for csmd's), so a burst of answers or commits owes one trim,
    wakes the main loop once, and the next trim waits until ``EVERY_S`` after the last."""
    from csm.daemon.heap import Trimmer

    t = Trimmer()
    wakes: list[None] = []
    t.wake = lambda: wakes.append(None)
    for _ in range(100):
        t.soon()
    assert len(wakes) == 1 and t.owed
    assert t.tick() is None and not t.owed  # the first is due at once
    t.soon()
    wait = t.tick()
    assert wait is not None and 0 < wait <= Trimmer.EVERY_S and t.owed  # the next one waits its turn
    assert len(wakes) == 2
    wait_for(lambda: t.tick() is None and not t.owed, 2 * Trimmer.EVERY_S, "the owed trim paid once due")
    assert t.tick() is None  # nothing owed: the main loop sleeps


BIG_VALUES = [
    ("SELECT length(randomblob(900000000))", "makes a value over"),
    ("SELECT zeroblob(900000000)", "makes a value over"),
    ("SELECT length(printf('%.*c', 900000000, 'x'))", None),  # SQLite gives NULL past the length limit
    ("SELECT length(replace(hex(zeroblob(1000000)), '0', hex(zeroblob(500))))", "query stopped"),
    ("WITH RECURSIVE r(i, s) AS (SELECT 0, 'x' UNION ALL SELECT i + 1, s || s FROM r WHERE i < 40) "
     "SELECT max(length(s)) FROM r", "query stopped"),
    ("SELECT " + ", ".join(["randomblob(60000000)"] * 8), "needs more memory than csmd allows"),
    ("SELECT " + " || ".join(["randomblob(20000000)"] * 8), "query stopped"),
]


def test_a_query_cannot_make_csmd_allocate_what_no_reply_could_carry(csmd: Csmd) -> None:
    """``SELECT randomblob(900000000)`` took csmd from 39 MB to 1.78 GB; every way SQL has of
    building big values, one at a time or many at once, now stops with a clear error."""
    csmd.start()
    for query, error in BIG_VALUES:
        r = run_csm("query", "sql", query)
        if error is None:
            assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        else:
            assert r.returncode == 4 and error in r.stderr and r.stderr.count("\n") == 1, (query, r.stderr)
    assert vm(pid(csmd), "VmHWM") < 200, "SQLite's heap is capped near query_max_bytes (64 MB) + 32 MB"
    after = run_csm("query", "sql", "SELECT length(randomblob(1000000)) AS n", "--json")
    assert json.loads(after.stdout) == [{"n": 1000000}], "csmd answers normally after"


def tool_result(session: str, i: int, output: str) -> bytes:
    """A tool result as Claude Code writes it: a short block in the message, the whole output in
    ``toolUseResult`` (stored with the line, not indexed), so the line is large and its tool text small."""
    return json.dumps({"type": "user", "sessionId": session, "uuid": f"r{i}", "timestamp": "2026-11-01T10:00:00Z",
                       "message": {"role": "user", "content": [
                           {"type": "tool_result", "tool_use_id": f"t{i}", "content": f"listing {i} done"}]},
                       "toolUseResult": {"stdout": output, "stderr": ""}}).encode() + b"\n"


def test_deferred_tool_text_is_indexed_in_bounded_batches_and_the_heap_given_back(
        csmd: Csmd, projects: Path, tmp_path: Path, db: Path) -> None:
    """The tool-text catch-up after a large backlog reads its lines a bounded amount at a time.

    1,200 lines of 48 KB (58 MB) wait for it, fewer than one batch of lines: read in one go they
    were all in csmd's heap at once (peak over 100 MB); bounded by bytes, csmd stays near its size
    through the sync and the catch-up, and is back under 50 MB once it is done."""
    cfg = tmp_path / "config" / "csm" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("search_defer_tools_bytes = 0\n")  # every backlog defers its tool text
    output = " ".join(f"file{j}.py" for j in range(5_000))[:48_000]
    for k in range(4):
        f = projects / "p" / f"big{k}.jsonl"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"".join(tool_result(f"big{k}", k * 300 + i, output) for i in range(300)))
    csmd.start()
    wait_for(lambda: scalar("SELECT count(*) FROM events") == 1_200, 60, "the rows")
    wait_for(lambda: scalar("SELECT count(*) FROM search_tools_pending") == 0, 120, "the tool-text catch-up")
    wait_for(lambda: "indexed the tool text of 1200 lines" in csmd.log(), 30, "the catch-up's end")
    hits = run_csm("query", "search", "listing 1199", "--include-tools", "--json")
    assert hits.returncode == 0 and json.loads(hits.stdout), hits.stderr
    assert vm(pid(csmd), "VmHWM") < 75, "the catch-up held its lines all at once"
    assert vm(pid(csmd), "VmRSS") < 50, "the catch-up's heap was not given back"


def test_csmd_does_not_load_openssl(csmd: Csmd, projects: Path) -> None:
    """``import hashlib`` loads OpenSSL's libcrypto, 3.3 MB of csmd's RSS for a blake2b that Python
    has built in: after ingesting a file (head and tail hashes), pricing its usage and answering
    queries, csmd has not mapped it."""
    f = projects / "p" / "s.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(user("s", f"hello {i}", i) for i in range(3)))
    csmd.start()
    wait_for(lambda: scalar("SELECT count(*) FROM events") == 3, 20, "the rows")
    for args in (("query", "usage", "--by", "day"), ("query", "sessions"), ("query", "search", "hello")):
        assert run_csm(*args).returncode == 0
    maps = Path(f"/proc/{pid(csmd)}/maps").read_text()
    assert "libcrypto" not in maps and "libssl" not in maps


def test_every_checkpoint_row_shares_one_root_and_project_string(db: Path) -> None:
    """csmd keeps every file's checkpoint row (3,000 on a 1 GB history): their roots and projects,
    each one of a few values, are one string each, not one per row."""
    from csm.daemon.store import FileRow, Store, open_writer

    store = Store(open_writer(db))
    try:
        with store.transaction():
            for i in range(1, 4):
                root, project = "".join(["/home/u/.claude/", "projects"]), "".join(["-home-u-", "src"])
                store.save_file(FileRow(file_id=i, path=f"{root}/{project}/{i}.jsonl", root=root, project=project,
                                        session_key=str(i), parent_session=None, dev=1, inode=i, size=0,
                                        mtime_ns=0, offset=0), "2026-12-02T00:00:00Z")
        rows = store.files()
    finally:
        store.close()
    assert len(rows) == 3
    assert rows[0].root is rows[1].root is rows[2].root
    assert rows[0].project is rows[1].project is rows[2].project


def long_session(f: Path, calls: int, output_bytes: int) -> None:
    """``calls`` turns of a prompt, a Bash call whose result is ``output_bytes`` long, and an answer."""
    lines = []
    for i in range(calls):
        ts = f"2026-11-02T10:{i // 60:02d}:{i % 60:02d}.000Z"
        lines += [
            record(prompt(f"u{i}", "long", ts, f"prompt {i}")),
            record(response(f"a{i}", "long", ts, {"id": f"m{i}", "content": [
                {"type": "tool_use", "id": f"t{i}", "name": "Bash", "input": {"command": f"cat part{i}"}}]})),
            record(prompt(f"r{i}", "long", ts, [{"type": "tool_result", "tool_use_id": f"t{i}",
                                                 "content": f"{i:06d}" + "x" * output_bytes}])),
            record(response(f"b{i}", "long", ts, {"id": f"n{i}", "content": [{"type": "text", "text": f"answer {i}"}]})),
        ]
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"\n".join(lines) + b"\n")


def peak_during(d: Csmd, work: Callable[[], T]) -> tuple[T, float]:
    """``work``'s result and csmd's peak RSS while it ran, over its RSS before (the peak reset first)."""
    Path(f"/proc/{pid(d)}/clear_refs").write_text("5")
    base = vm(pid(d), "VmRSS")
    result = work()
    return result, vm(pid(d), "VmHWM") - base


def test_a_whole_long_session_and_its_last_page_cost_csmd_a_bounded_memory(csmd: Csmd, projects: Path) -> None:
    """``csm query show --full --json`` of a 50 MB session took csmd from 41 MB to 146 MB (and left it at
    80): every entry was built into one list and sent as one reply, and the web page past the end built
    them all too. Entries now leave as they settle, in acknowledged messages, and a page keeps a page:
    30 MB of tool output cost csmd a few MB, and everything still arrives, in order."""
    import msgspec

    from csm.client.transport import request
    from csm.shared import protocol

    calls, size = 800, 36_000
    long_session(projects / "p" / "long.jsonl", calls, size)
    csmd.start()
    sync_now()
    shown, peak = peak_during(csmd, lambda: run_csm("query", "show", "long", "--full", "--json", timeout=120))
    assert shown.returncode == 0, shown.stderr
    t = json.loads(shown.stdout)
    entries = t["entries"]
    assert (len(entries), t["total"], t["complete"]) == (3 * calls, 3 * calls, True)
    assert [(e["kind"], e.get("text")) for e in entries[:3]] == [("user", "prompt 0"), ("tool", ""),
                                                                  ("assistant", "answer 0")]
    assert entries[-1]["text"] == f"answer {calls - 1}"
    assert all(e["output"] == f"{i:06d}" + "x" * size for i, e in enumerate(entries[1::3])), "each call its result"
    assert peak < 20, f"csmd grew {peak:.0f} MB to show a {len(shown.stdout) >> 20} MB conversation"

    def last_page() -> protocol.Message:
        return request(protocol.Show(session="long", full=True, offset=10**6, limit=200), timeout_s=60)

    page, peak = peak_during(csmd, last_page)
    assert isinstance(page, protocol.Transcript)
    assert (page.offset, page.total, len(page.entries), page.complete) == (2200, 3 * calls, 200, True)
    assert (page.entries[0].output, page.entries[-1].text) == ("000733" + "x" * size, f"answer {calls - 1}")
    assert page.entries == msgspec.convert(entries[2200:], list[protocol.Entry]), "the whole conversation's last 200"
    assert peak < 20, f"csmd grew {peak:.0f} MB to show the last page"

"""A terminal that fits (issue 15): tables by display width, the pager, colour, shell completion, resume
lines that work from anywhere, the retention guard and the Prometheus figures of ``csm status``.

Terminal behaviour is tested the way a person meets it: the real ``csm`` on a real pseudo-terminal
(``os.openpty``, a window size set with TIOCSWINSZ, the terminal made the controlling one, so
``less`` reads its keys from it), against a real csmd.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
import wcwidth
from csmtest import Csmd, csm_json, run_csm, status, wait_for

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")
CJK_TITLE = "日本語のタイトルをとても長く書いてみる 🎉🚀 emoji and more words to make it long"
CWD = "/home/me/it's a $dir with spaces"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    for var in ("NO_COLOR", "FORCE_COLOR", "PAGER", "CSM_PAGER", "LESS"):
        monkeypatch.delenv(var, raising=False)


class Tty:
    """The real ``csm`` on a pseudo-terminal of ``cols`` x ``rows``: its output as the terminal got it."""

    def __init__(self, *args: str, cols: int = 80, rows: int = 24, env: dict[str, str] | None = None) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

        def controlling() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        full = {**os.environ, "TERM": "xterm-256color", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "csm.client", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=full, preexec_fn=controlling, close_fds=True)
        os.close(slave)
        self.data = b""

    def read(self, timeout: float = 0.1) -> bool:
        """Read what is there; False once the terminal is closed (every process on it has exited)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other side closed
            return False
        self.data += chunk
        return bool(chunk)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace").replace("\r\n", "\n")

    def wait_text(self, needle: str, timeout: float = 20.0) -> None:
        try:
            wait_for(lambda: (self.read() or True) and needle in self.text, timeout, f"{needle!r} on the terminal")
        except AssertionError as e:
            raise AssertionError(f"{e}; the terminal shows {self.text[-2000:]!r}") from None

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.read() and time.monotonic() < deadline:
            pass
        try:
            code = self.proc.wait(max(deadline - time.monotonic(), 0.1))
        finally:
            os.close(self.master)
        return code


def tty(*args: str, **kw: Any) -> tuple[int, str]:
    t = Tty(*args, **kw)
    code = t.finish()
    return code, t.text


def jline(**obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def session_file(projects: Path, sid: str, title: str, cwd: str = CWD, ts: str = "2026-11-01T10:00:00.000Z",
                 lines: int = 1) -> Path:
    f = projects / "-home-me-a-project-with-a-rather-long-folder-name" / f"{sid}.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(jline(type="user", uuid=f"{sid}-{i}", sessionId=sid, timestamp=ts, cwd=cwd,
                          message={"role": "user", "content": f"{title} (line {i})" if i else title})
                    for i in range(lines))
    f.write_bytes(data)
    return f


SID = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"


@pytest.fixture
def one(csmd: Csmd, projects: Path) -> Path:
    """One session whose title is wide (CJK, emoji) and whose cwd needs quoting, ingested."""
    f = session_file(projects, SID, CJK_TITLE, lines=60)
    csmd.start()
    return f


# --- tables --------------------------------------------------------------------------------------


def test_tables_fit_the_terminal_by_display_width(one: Path) -> None:
    for cols in (80, 120):
        code, out = tty("query", "sessions", cols=cols)
        assert code == 0, out
        lines = [ANSI.sub("", x) for x in out.splitlines() if x]
        assert len(lines) == 3 and lines[0].startswith("session "), out
        assert all(wcwidth.width(x) <= cols for x in lines), [(wcwidth.width(x), x) for x in lines]
        row = lines[2]
        assert row.startswith(SID[:8] + "  ") and SID[:9] not in row, "an 8-character id, as git shows commits"
        assert "日本語" in row and "…" in row and "2026-11-01 10:00" in row, "the title gives up its room, not the times"
        assert row.rstrip().endswith(" 60"), "the message count keeps its room"
    # --wide, and a pipe, show everything.
    code, wide = tty("query", "sessions", "--wide", cols=80)
    assert code == 0 and SID in wide and CJK_TITLE in wide
    piped = run_csm("query", "sessions").stdout
    assert SID in piped and CJK_TITLE in piped and "…" not in piped


def test_wide_characters_align_their_columns(one: Path) -> None:
    code, out = tty("query", "sessions", "--wide", cols=80)
    lines = [ANSI.sub("", x) for x in out.splitlines() if x]
    header, rule, row = lines
    # The "started" column begins at the same display column in the header and in the row with CJK.
    col = wcwidth.width(header[: header.index("started")])
    cell = row[: row.index("2026-11-01")]
    assert wcwidth.width(cell) == col, (col, wcwidth.width(cell))


# --- pager ---------------------------------------------------------------------------------------


PAGER = """import os, sys
data = sys.stdin.buffer.read()
open(sys.argv[1], "wb").write(data)
open(sys.argv[1] + ".env", "w").write(os.environ.get("LESS", "(unset)"))
sys.stdout.buffer.write(data)
"""


def test_long_output_goes_through_the_pager_only_on_a_terminal(one: Path, tmp_path: Path) -> None:
    script = tmp_path / "pager.py"
    script.write_text(PAGER)
    got = tmp_path / "paged.txt"
    pager = {"PAGER": f"{shlex.quote(sys.executable)} {script} {got}"}
    for args in (["query", "show", SID[:8]], ["query", "search", "emoji"], ["export", SID[:8]]):
        got.unlink(missing_ok=True)
        code, out = tty(*args, env=pager)
        assert code == 0, out
        assert got.exists(), (args, out)
        paged = got.read_text()
        assert "日本語" in paged and paged.count("\n") > 1, args
        assert Path(f"{got}.env").read_text() == "FRX", "LESS=FRX unless the user set LESS, as git does"
        got.unlink()
        code, out = tty(*args, "--no-pager", env=pager)
        assert code == 0 and "日本語" in out and not got.exists(), "--no-pager prints straight to the terminal"
        r = run_csm(*args, env={**os.environ, **pager})
        assert r.returncode == 0 and "日本語" in r.stdout and not got.exists(), "a pipe gets no pager"
    code, _ = tty("query", "show", SID[:8], env={**pager, "LESS": "-S"})
    assert code == 0 and Path(f"{got}.env").read_text() == "-S"
    got.unlink()
    code, out = tty("export", SID[:8], "-o", str(tmp_path / "x.md"), env=pager)
    assert code == 0 and not got.exists(), "a file written with -o is not paged"


def test_less_pages_a_long_transcript_and_q_quits(one: Path) -> None:
    """No PAGER: less -FRX, the real one, holds the output at one screen until q."""
    t = Tty("query", "show", SID[:8], rows=10, cols=100)
    t.wait_text("\n:")  # less's prompt after the first screen
    end = time.monotonic() + 0.5
    while time.monotonic() < end and t.read(0.1):
        pass
    assert "resume   cd " in t.text and "(line 59)" not in t.text, "the pager waits after the first screen"
    t.type(b"q")
    assert t.finish() == 0


def test_a_pager_quit_early_or_missing_loses_nothing_else(one: Path, tmp_path: Path) -> None:
    code, out = tty("query", "show", SID[:8], env={"PAGER": "head -n 2"})
    assert code == 0 and "Traceback" not in out and "Broken pipe" not in out
    assert len([x for x in out.splitlines() if x.strip()]) == 2
    code, out = tty("query", "show", SID[:8], env={"PAGER": "no-such-pager-anywhere"})
    assert code == 0 and "(line 59)" in out, "a pager that cannot start is skipped"
    code, out = tty("query", "show", SID[:8], env={"PAGER": "cat"})
    assert code == 0 and "(line 59)" in out


# --- colour --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "env", "colored"), [
    ((), {}, True),
    ((), {"NO_COLOR": "1"}, False),
    (("--color", "never"), {}, False),
    (("--color", "never"), {"FORCE_COLOR": "1"}, False),
    (("--color", "always"), {"NO_COLOR": "1"}, True),
    ((), {"TERM": "dumb"}, False),
])
def test_colour_on_a_terminal(one: Path, args: tuple[str, ...], env: dict[str, str], colored: bool) -> None:
    code, out = tty("query", "show", SID[:8], "--no-pager", *args, env=env)
    assert code == 0 and "日本語" in out
    assert bool(ANSI.search(out)) is colored, out[:300]


@pytest.mark.parametrize(("args", "env", "colored"), [
    ((), {}, False),
    ((), {"FORCE_COLOR": "1"}, True),
    ((), {"FORCE_COLOR": "0"}, False),
    (("--color", "always"), {}, True),
    (("--color", "auto"), {"FORCE_COLOR": "1", "NO_COLOR": "1"}, True),
])
def test_colour_through_a_pipe(one: Path, args: tuple[str, ...], env: dict[str, str], colored: bool) -> None:
    for cmd in (["query", "show", SID[:8]], ["query", "search", "emoji"]):
        r = run_csm(*cmd, *args, env={**os.environ, **env})
        assert r.returncode == 0 and "日本語" in r.stdout
        assert bool(ANSI.search(r.stdout)) is colored, (cmd, r.stdout[:300])


def test_one_output_grammar() -> None:
    r = run_csm("query", "sessions", "--json", "--format", "csv")
    assert r.returncode == 2 and "--json and --format csv ask for two formats" in r.stderr
    r = run_csm("query", "sessions", "--format", "prometheus")
    assert r.returncode == 2 and "prometheus" in r.stderr, "prometheus is status's own format"
    for cmd in (["status"], ["query", "sessions"], ["query", "show", "x"], ["query", "usage"], ["config", "show"]):
        help_ = run_csm(*cmd, "--help").stdout
        assert all(o in help_ for o in ("--format", "--json", "--jsonl", "--csv", "--wide", "--color")), cmd


# --- resume from anywhere ------------------------------------------------------------------------


def test_resume_lines_work_from_any_directory(one: Path, tmp_path: Path) -> None:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    claude = bin_ / "claude"
    claude.write_text('#!/bin/sh\nprintf "%s\\n" "$PWD" "$@"\n')
    claude.chmod(0o755)
    Path(CWD.replace("/home/me", str(tmp_path))).mkdir(parents=True)
    lines = {
        "sessions --json": csm_json("query", "sessions")[0]["resume"],
        "show --json": csm_json("query", "show", SID[:8])["session"]["resume"],
        "search --json": csm_json("query", "search", "emoji")[0]["resume"],
        "show": next(x for x in run_csm("query", "show", SID[:8]).stdout.splitlines() if x.startswith("resume"))
        .removeprefix("resume").strip(),
        "search": run_csm("query", "search", "emoji").stdout.splitlines()[2].strip(),
    }
    for where, line in lines.items():
        assert line == f"cd {shlex.quote(CWD)} && claude --resume {SID}", where
        # Run it, as pasted, from another directory: it lands in the session's cwd.
        here = line.replace(shlex.quote(CWD), shlex.quote(CWD.replace("/home/me", str(tmp_path))))
        r = subprocess.run(["sh", "-c", here], cwd="/", capture_output=True, text=True,
                           env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"})
        assert r.stdout.splitlines() == [CWD.replace("/home/me", str(tmp_path)), "--resume", SID], (where, r)


# --- shell completion ----------------------------------------------------------------------------


def complete(shell: str, words: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # bash and zsh give the index of the word being completed; fish gives the word itself.
    cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    if shell == "fish":
        cword = "" if words.endswith(" ") else words.split()[-1]
    return subprocess.run([sys.executable, "-c", "from csm.client.cli import main; main()"], capture_output=True,
                          text=True, timeout=20, env={**os.environ, **(env or {}), "_CSM_COMPLETE": f"{shell}_complete",
                                                      "COMP_WORDS": words, "COMP_CWORD": cword})


def test_completion_of_session_ids_and_projects(csmd: Csmd, projects: Path) -> None:
    session_file(projects, SID, "first")
    session_file(projects, "3f00aaaa-0000-4000-8000-000000000000", "second")
    f = projects / "-srv-other-repo" / "9e9e9e9e-0000-4000-8000-000000000000.jsonl"
    f.parent.mkdir()
    f.write_bytes(jline(type="user", uuid="u", sessionId=f.stem, timestamp="2026-11-01T10:00:00.000Z",
                        message={"role": "user", "content": "hi"}))
    csmd.start()
    r = complete("bash", "csm query show 3f")
    assert r.returncode == 0 and sorted(r.stdout.split()) == sorted(
        ["plain,3f00aaaa-0000-4000-8000-000000000000", f"plain,{SID}"]), r
    assert complete("bash", "csm export 9e").stdout.split() == [f"plain,{f.stem}"]
    assert complete("fish", "csm watch 3f2").stdout.split() == [f"plain,{SID}"]
    assert complete("bash", "csm restore 3f2").stdout.split() == [f"plain,{SID}"]
    assert complete("zsh", "csm query show 3f2").stdout.split() == ["plain", SID, "_"]
    assert complete("bash", "csm query sessions -p OTHER").stdout.split() == ["plain,-srv-other-repo"]
    assert complete("bash", "csm query usage --project rather").stdout.split() == [
        "plain,-home-me-a-project-with-a-rather-long-folder-name"]
    for shell, mark in (("bash", "complete -o nosort -F"), ("zsh", "compdef"), ("fish", "complete --no-files")):
        src = subprocess.run(["csm"], env={**os.environ, "_CSM_COMPLETE": f"{shell}_source"}, capture_output=True,
                             text=True).stdout
        assert mark in src, shell


def test_completion_without_csmd_is_silent_and_fast() -> None:
    started = time.monotonic()
    r = complete("bash", "csm query show 3f")
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "", "")
    assert time.monotonic() - started < 10  # an interpreter start under load; no wait on a socket


# --- retention guard -----------------------------------------------------------------------------


DAY_MS = 86_400_000


def history(*entries: dict[str, Any]) -> bytes:
    return b"".join(jline(**e) for e in entries) + b"not json\n"


def test_retention_setting_archive_only_sessions_and_what_was_lost_before(csmd: Csmd, projects: Path,
                                                                           tmp_path: Path) -> None:
    claude = projects.parent
    (claude / "settings.json").write_text(json.dumps({"cleanupPeriodDays": 7, "model": "opus"}))
    now = int(time.time() * 1000)
    kept = session_file(projects, "kept-0000", "kept", ts=time.strftime(
        "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime((now - 40 * DAY_MS) / 1000)))
    session_file(projects, "other-0000", "other")
    (claude / "history.jsonl").write_bytes(history(
        {"display": "a", "timestamp": now - 40 * DAY_MS, "project": "/p", "sessionId": "gone-1"},
        {"display": "b", "timestamp": now - 39 * DAY_MS, "project": "/p", "sessionId": "gone-1"},
        {"display": "c", "timestamp": now - 20 * DAY_MS, "project": "/p", "sessionId": "gone-2"},
        {"display": "d", "timestamp": now - 40 * DAY_MS, "project": "/p", "sessionId": "kept-0000"},
        {"display": "e", "timestamp": now - 1 * DAY_MS, "project": "/p", "sessionId": "not-written-yet"},
        {"display": "f", "timestamp": now - 60 * DAY_MS, "project": "/p"},  # Claude Code 0.2: no sessionId
        {"display": "g", "timestamp": now - 30 * DAY_MS, "project": "/p"},  # after the archive's oldest line
    ))
    csmd.start()
    s = wait_for(lambda: (st := status())["lost_before_csm"] and st, what="history.jsonl checked after the first rescan")
    assert (s["cleanup_period_days"], s["cleanup_period_source"]) == (7, str(claude / "settings.json"))
    lost = s["lost_before_csm"]
    assert (lost["sessions"], lost["prompts"]) == (2, 4)
    assert lost["first"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now - 60 * DAY_MS) // 1000))
    assert "Claude Code deleted 2 sessions (4 prompts" in csmd.log()

    kept.unlink()
    wait_for(lambda: status()["sessions_gone"] == 1, what="kept marked gone")
    first = run_csm("status")
    rows = dict(x.split(None, 1) for x in first.stdout.splitlines())
    assert rows["retention"] == (f"Claude Code deletes transcripts idle 7 days (cleanupPeriodDays in "
                                 f"{claude / 'settings.json'}); 1 session kept only in the archive")
    assert rows["lost"].startswith("2 sessions (4 prompts typed ")
    assert "warning: Claude Code had deleted 2 sessions before csm archived them" in first.stderr
    again = run_csm("status")
    rows_again = dict(x.split(None, 1) for x in again.stdout.splitlines())
    assert (rows_again["lost"], rows_again["retention"]) == (rows["lost"], rows["retention"])
    assert again.stderr == "", "the warning is given once; its row stays"

    (claude / "settings.json").unlink()
    assert (status()["cleanup_period_days"], status()["cleanup_period_source"]) == (30, "default")


def test_no_loss_when_every_session_is_archived(csmd: Csmd, projects: Path) -> None:
    now = int(time.time() * 1000)
    session_file(projects, "s-1", "x", ts="2020-01-01T00:00:00.000Z")
    (projects.parent / "history.jsonl").write_bytes(history(
        {"display": "a", "timestamp": now - 400 * DAY_MS, "project": "/p", "sessionId": "s-1"}))
    csmd.start()
    for _ in range(2):  # the first start, and a later one
        s = wait_for(lambda: (st := status())["lost_before_csm"] and st, what="history.jsonl checked")
        assert s["lost_before_csm"] == {"sessions": 0, "prompts": 0, "first": None, "last": None}
        assert s["cleanup_period_days"] == 30 and "deleted" not in csmd.log()
        csmd.stop()
        csmd.start()
    out = run_csm("status")
    assert "lost" not in out.stdout and out.stderr == ""


def test_a_database_error_in_the_check_is_never_raised_into_ingestion(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The check runs on the ingest thread after work: an error there (damage, a lock) would otherwise
    go through the syncer's backoff and stall ingestion for a finding that can wait."""
    import sqlite3

    from csm.daemon.retention import Retention

    projects = tmp_path / "claude" / "projects"
    projects.mkdir(parents=True)
    (projects.parent / "history.jsonl").write_bytes(history({"display": "a", "timestamp": 1, "sessionId": "x"}))
    r = Retention([projects])
    broken = sqlite3.connect(tmp_path / "x.db")
    broken.close()  # any use raises sqlite3.ProgrammingError, a sqlite3.Error
    for _ in range(3):
        r.check(broken, rescanned=True)
    assert (r.checked, r.lost) == (False, None), "tried again after the next work"
    assert caplog.text.count("cannot compare Claude Code's history.jsonl") == 1, "logged once"
    good = sqlite3.connect(tmp_path / "good.db")
    good.execute("CREATE TABLE session_stats (session_id TEXT, first_ts TEXT)")
    r.check(good, rescanned=True)
    assert r.checked and r.lost is not None and (r.lost.sessions, r.lost.prompts) == (1, 1)


# --- Prometheus ----------------------------------------------------------------------------------


def test_status_for_prometheus(one: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    r = run_csm("status", "--format", "prometheus")
    assert r.returncode == 0, r.stderr
    families = {f.name: f for f in text_string_to_metric_families(r.stdout)}
    value = {name: f.samples[0].value for name, f in families.items()}
    s = status()
    assert value["csm_up"] == 1 and value["csm_sessions"] == s["sessions"] == 1
    assert value["csm_files"] == s["files"] and value["csm_bad_lines"] == 0
    wait_for(lambda: status()["lost_before_csm"], what="history.jsonl checked")
    r = run_csm("status", "--format", "prometheus")
    value = {f.name: f.samples[0].value for f in text_string_to_metric_families(r.stdout)}
    assert value["csm_cleanup_period_days"] == 30 and value["csm_sessions_lost_before_csm"] == 0
    assert families["csm_watcher_restarts"].type == "counter"
    assert families["csm_info"].samples[0].labels == {"version": s["version"]}
    assert abs(value["csm_last_sync_timestamp_seconds"] - time.time()) < 600


def test_prometheus_when_csmd_is_not_running() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    r = run_csm("status", "--format", "prometheus")
    assert r.returncode == 0 and "csmd is not running" in r.stderr
    assert [(f.name, f.samples[0].value) for f in text_string_to_metric_families(r.stdout)] == [("csm_up", 0)]
    assert run_csm("status").returncode == 3, "the other formats still fail"

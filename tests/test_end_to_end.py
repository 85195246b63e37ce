"""The whole path with real parts: files -> csmd (watchdog, SQLite) -> ZeroMQ -> csm CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lines import append, line
from csmtest import REAL, Csmd, csm_json, db_rows, line_count, run_csm, scalar, sql, wait_for


def uuids() -> list[str]:
    return [r["uuid"] for r in sql("SELECT uuid FROM lines ORDER BY file_path, line_offset")]


class TestSyncAndQuery:
    def test_lines_written_before_start_are_queryable_exactly(self, csmd: Csmd, projects: Path) -> None:
        f = projects / "-home-me-proj" / "s1.jsonl"
        append(f, b"".join(line(i) for i in range(5)))
        csmd.start()
        out = csm_json("sync", "--now")
        assert out["files_scanned"] == 1
        rows = sql("SELECT file_path, line_offset, uuid, parent_uuid, session_id, type, timestamp, raw FROM lines "
                   "ORDER BY line_offset")
        assert [r["uuid"] for r in rows] == [f"u{i}" for i in range(5)]
        assert rows[0]["parent_uuid"] is None and rows[1]["parent_uuid"] == "u0"
        assert {r["file_path"] for r in rows} == {str(f)}
        assert (b"\n".join(r["raw"].encode() for r in rows) + b"\n") == f.read_bytes()

    def test_appends_arrive_without_sync(self, csmd: Csmd, projects: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        append(f, line(0))
        csmd.start()
        append(f, line(1) + line(2))
        wait_for(lambda: uuids() == ["u0", "u1", "u2"], what="appended lines")
        g = projects / "new-project" / "s2.jsonl"  # a folder created after start
        append(g, line(0, "s2"))
        wait_for(lambda: scalar("SELECT count(*) FROM lines WHERE session_id = 's2'") == 1, what="new project")

    def test_partial_last_line_waits_for_its_newline(self, csmd: Csmd, projects: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        append(f, line(0))
        csmd.start()
        whole = line(1)
        append(f, whole[:25])
        append(f, line(0, "marker")[:0])
        run_csm("sync", "--now")
        assert uuids() == ["u0"], "a line without its newline must not be ingested"
        append(f, whole[25:])
        wait_for(lambda: uuids() == ["u0", "u1"], what="the completed line")
        assert scalar("SELECT count(*) FROM sync_errors") == 0

    def test_restart_neither_duplicates_nor_loses(self, csmd: Csmd, projects: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        append(f, b"".join(line(i) for i in range(10)))
        csmd.start()
        assert csmd.stop() == 0
        append(f, b"".join(line(i) for i in range(10, 15)))  # written while csmd was down
        csmd.start()
        csm_json("sync", "--now")
        assert uuids() == [f"u{i}" for i in range(15)]
        assert csmd.stop() == 0
        csmd.start()
        csm_json("sync", "--now")
        assert uuids() == [f"u{i}" for i in range(15)]

    def test_writes_are_refused(self, csmd: Csmd, projects: Path) -> None:
        append(projects / "p" / "s1.jsonl", line(0))
        csmd.start()
        for stmt in ("DELETE FROM events", "DROP TABLE events", "ATTACH '/tmp/x.db' AS x",
                     "PRAGMA journal_mode = DELETE", "INSERT INTO events(raw) VALUES ('x')"):
            r = run_csm("query", "sql", stmt)
            assert r.returncode == 4, (stmt, r.stderr)
            assert "read-only" in r.stderr and "Traceback" not in r.stderr
        assert scalar("SELECT count(*) FROM lines") == 1

    def test_query_formats(self, csmd: Csmd, projects: Path) -> None:
        append(projects / "p" / "s1.jsonl", line(0) + line(1))
        csmd.start()
        q = "SELECT uuid, type FROM lines ORDER BY line_offset"
        csv_out = run_csm("query", "sql", q, "--csv").stdout
        assert csv_out.splitlines() == ["uuid,type", "u0,user", "u1,user"]
        table = run_csm("query", "sql", q).stdout.splitlines()
        assert table[0].split() == ["uuid", "type"] and table[2].split() == ["u0", "user"]
        jsonl = [json.loads(x) for x in run_csm("query", "sql", q, "--jsonl").stdout.splitlines()]
        assert jsonl == [{"uuid": "u0", "type": "user"}, {"uuid": "u1", "type": "user"}]
        bad = run_csm("query", "sql", "SELEC nonsense")
        assert bad.returncode == 4 and bad.stderr.startswith("csm: SQL error")

    def test_status_fields(self, csmd: Csmd, projects: Path, db: Path) -> None:
        append(projects / "p" / "s1.jsonl", line(0) + line(1))
        csmd.start()
        s = csm_json("status")
        for key in ("version", "pid", "uptime_s", "state", "db_path", "roots", "files", "events", "sessions",
                    "last_sync_at", "errors"):
            assert key in s, key
        assert s["db_path"] == str(db)
        assert s["roots"] == [str(projects)]
        assert (s["files"], s["events"], s["sessions"], s["errors"]) == (1, 2, 1, 0)
        assert s["pid"] == csmd.proc.pid
        human = run_csm("status")
        assert human.returncode == 0 and "lines" in human.stdout and str(db) in human.stdout


class TestDaemonLifecycle:
    def test_second_daemon_refuses(self, csmd: Csmd) -> None:
        csmd.start()
        r = subprocess.run([sys.executable, "-m", "csm.daemon"], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert r.stderr.strip().count("\n") == 0, r.stderr
        assert f"pid {csmd.proc.pid}" in r.stderr
        assert csm_json("status")["pid"] == csmd.proc.pid, "the first daemon must keep its socket"

    def test_sigterm_and_sigint_exit_cleanly(self, csmd: Csmd, tmp_path: Path) -> None:
        import signal

        csmd.start()
        assert csmd.stop(signal.SIGINT) == 0
        csmd.start()
        assert csmd.stop(signal.SIGTERM) == 0
        r = run_csm("status")
        assert r.returncode == 3

    def test_no_daemon_fails_fast_with_the_fix(self) -> None:
        t = time.monotonic()
        r = run_csm("status")
        elapsed = time.monotonic() - t
        assert r.returncode == 3
        assert r.stderr.count("\n") == 1, r.stderr
        assert "csmd" in r.stderr and "csm service install" in r.stderr and "Traceback" not in r.stderr
        assert elapsed < 1.0 + 1.5, elapsed  # 1 s for csm plus interpreter start-up on a slow machine

    def test_stale_socket_after_a_crash(self, csmd: Csmd) -> None:
        csmd.start()
        csmd.kill()
        r = run_csm("status")
        assert r.returncode == 3 and "not running" in r.stderr
        csmd.start()  # the new daemon replaces the stale socket
        assert csm_json("status")["pid"] == csmd.proc.pid

    def test_help_and_version(self) -> None:
        for mod in ("csm.daemon", "csm.client"):
            r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True)
            assert r.returncode == 0 and "Example" in r.stdout
            v = subprocess.run([sys.executable, "-m", mod, "--version"], capture_output=True, text=True)
            assert v.returncode == 0 and "0." in v.stdout

    def test_cli_never_imports_the_daemon(self) -> None:
        code = ("import sys; from csm.client import cli; "
                "bad = [m for m in sys.modules if m.startswith(('watchdog', 'sqlite3', 'csm.daemon'))]; "
                "print(','.join(bad))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip() == "", r.stdout


class TestRealTranscripts:
    def test_every_line_of_the_real_fixtures_is_accounted_for(self, csmd: Csmd, projects: Path, db: Path) -> None:
        shutil.copytree(REAL, projects, dirs_exist_ok=True)
        (projects / "SOURCES.md").unlink()
        csmd.start()
        files = sorted(projects.rglob("*.jsonl"))
        assert len(files) == 16
        for f in files:
            rows = db_rows(db, "SELECT count(*) FROM lines WHERE file_path = ?", str(f))[0][0]
            errors = db_rows(db, "SELECT count(*) FROM sync_errors WHERE file_path = ?", str(f))[0][0]
            assert rows + errors == line_count(f), f
        assert db_rows(db, "SELECT count(*) FROM sync_errors")[0][0] == 3  # the hand-made non-object lines
        s = csm_json("status")
        assert s["events"] == sum(line_count(f) for f in files) - 3
        assert s["files"] == 16

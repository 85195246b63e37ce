"""``csm query sql``: a read-only door with a time limit and a row cap that never slows ingestion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csm.client.transport import request
from csm.shared import protocol
from csm.shared.errors import QueryError

from csmtest import Csmd, csm_json, db_rows, raw_client, run_csm, sql, wait_for
from lines import append, line

FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def configure(tmp_path: Path, **settings: object) -> None:
    cfg = tmp_path / "config" / "csm" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))


@pytest.fixture
def door(csmd: Csmd, projects: Path, tmp_path: Path) -> Csmd:
    configure(tmp_path, query_time_limit_s=1.0, query_max_rows=50)
    append(projects / "p" / "s1.jsonl", b"".join(line(i) for i in range(3)))
    return csmd.start()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def refused(stmt: str) -> str:
    """The one line the CLI prints when csmd refuses ``stmt``."""
    r = run_csm("query", "sql", stmt)
    assert r.returncode == 4, (stmt, r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def refusal(stmt: str) -> str:
    """Why csmd refused ``stmt``, asked in-process over the real socket (many statements, fast)."""
    with pytest.raises(QueryError) as e:
        request(protocol.Query(sql=stmt), timeout_s=10)
    return str(e.value)


class TestReadOnly:
    def test_only_reads_pass(self, door: Csmd, tmp_path: Path, db: Path) -> None:
        # ATTACH (VACUUM INTO attaches too)
        target = tmp_path / "copy.db"
        assert "read-only" in refused(f"ATTACH '{target}' AS x")
        assert "read-only" in refusal(f"VACUUM INTO '{target}'")
        assert not target.exists()
        # writes
        for stmt in ("INSERT INTO events (file_id, generation, line_offset, raw) VALUES (1, 0, 999, 'x')",
                     "UPDATE events SET raw = 'x'", "DELETE FROM sync_metadata", "CREATE TABLE t (a)",
                     "DROP VIEW lines", "CREATE TEMP TABLE t (a)", "REPLACE INTO session_stats (session_id, project) "
                     "VALUES ('a', 'b')", "BEGIN IMMEDIATE", "REINDEX", "ANALYZE"):
            assert "read-only" in refusal(stmt), stmt
        assert "read-only" in refused("DELETE FROM events")
        refusal("UPDATE sqlite_master SET sql = 'x'")  # the schema: refused, whatever SQLite says why
        assert db_rows(db, "SELECT count(*), min(raw) != 'x' FROM events") == [(3, 1)]
        # pragmas that change state; read pragmas pass
        for stmt in ("PRAGMA journal_mode = DELETE", "PRAGMA query_only = 0", "PRAGMA user_version = 7",
                     "PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA optimize", "PRAGMA writable_schema = 1",
                     "PRAGMA main.cache_size = 1", "PRAGMA secure_delete = 1"):
            assert "read-only" in refusal(stmt), stmt
        cols = [r["name"] for r in sql("PRAGMA table_info(lines)")]
        assert cols[:3] == ["file_path", "line_offset", "uuid"]
        assert [r["name"] for r in sql("SELECT name FROM pragma_table_info('sessions')")][0] == "session_id"
        assert sql("PRAGMA user_version")[0]["user_version"] >= 1
        assert sql("PRAGMA index_list(events)"), "index_list with an argument reads"
        # extension loading and other functions that reach outside the database
        for stmt in ("SELECT load_extension('/usr/lib/x86_64-linux-gnu/libm.so.6')",
                     "SELECT load_extension('libm', 'sqrt')", "SELECT fts3_tokenizer('simple')"):
            assert "read-only" in refusal(stmt), stmt


class TestLimits:
    def test_a_query_that_runs_forever_is_stopped(self, door: Csmd) -> None:
        t = time.monotonic()
        err = refused(FOREVER)
        assert time.monotonic() - t < 8
        assert "time limit" in err and "1 s" in err and "query_time_limit_s" in err
        assert csm_json("status")["events"] == 3, "csmd is still fine"

    def test_the_row_cap_is_said(self, door: Csmd) -> None:
        many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 500) SELECT x FROM c"
        r = run_csm("query", "sql", many, "--csv")
        assert r.returncode == 0
        assert r.stdout.splitlines()[1:] == [str(i) for i in range(1, 51)]
        assert r.stderr.strip() == "csm: output stopped at 50 rows (csmd's query_max_rows setting)"
        r = run_csm("query", "sql", many, "--csv", "--max-rows", "7")
        assert len(r.stdout.splitlines()) == 8
        assert r.stderr.strip() == "csm: output stopped at 7 rows (--max-rows)"
        r = run_csm("query", "sql", many.replace("500", "50"), "--csv")
        assert len(r.stdout.splitlines()) == 51 and r.stderr == "", "exactly the cap is not a truncation"

    def test_the_reply_size_is_capped(self, csmd: Csmd, projects: Path, tmp_path: Path) -> None:
        configure(tmp_path, query_max_bytes=5000)
        append(projects / "p" / "s1.jsonl", b"".join(line(i, extra="y" * 1000) for i in range(20)))
        csmd.start()
        r = run_csm("query", "sql", "SELECT raw FROM lines ORDER BY line_offset", "--jsonl")
        assert r.returncode == 0
        got = [json.loads(x)["raw"] for x in r.stdout.splitlines()]
        assert 1 <= len(got) < 5 and all('"u%d"' % i in raw for i, raw in enumerate(got))
        assert r.stderr.strip() == (f"csm: output stopped at {len(got)} rows (csmd's query_max_bytes setting; "
                                    "select fewer or smaller columns)")
        assert len(sql("SELECT uuid FROM lines")) == 20, "small columns still fit"


class TestFlood:
    def test_a_flood_of_slow_queries_is_answered_busy(self, csmd: Csmd, tmp_path: Path) -> None:
        configure(tmp_path, query_time_limit_s=0.5, query_queue=4)
        csmd.start()
        replies = []
        with raw_client() as s:
            for _ in range(20):
                s.send(protocol.encode(protocol.Query(sql=FOREVER)))
            for _ in range(20):
                assert s.poll(10_000), f"only {len(replies)} replies"
                reply = protocol.decode_reply(s.recv())
                assert isinstance(reply, protocol.Error)
                replies.append(reply)
        codes = sorted(r.code for r in replies)
        assert codes == ["busy"] * 16 + ["query"] * 4, codes
        assert "csmd is busy" in next(r.message for r in replies if r.code == "busy")
        assert sql("SELECT 1 AS one") == [{"one": 1}], "the queue drains and serves again"


class TestIsolation:
    def test_slow_queries_never_delay_ingestion_or_status(self, csmd: Csmd, projects: Path, tmp_path: Path,
                                                          db: Path) -> None:
        configure(tmp_path, query_time_limit_s=4.0)
        f = projects / "p" / "s1.jsonl"
        append(f, line(0))
        csmd.start()
        cmd = [sys.executable, "-m", "csm.client", "query", "sql", FOREVER]
        slow = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
                for _ in range(2)]  # as many as the query pool's workers
        try:
            assert csmd.proc is not None
            busy_from = cpu_seconds(csmd.proc.pid)
            wait_for(lambda: cpu_seconds(csmd.proc.pid) - busy_from > 0.3, 5, "the slow queries to be running")
            t = time.monotonic()
            status = run_csm("status", "--json", timeout=10)
            assert status.returncode == 0
            append(f, b"".join(line(i) for i in range(1, 101)))
            wait_for(lambda: db_rows(db, "SELECT count(*) FROM events")[0][0] == 101, 3.0, "lines during slow queries")
            assert time.monotonic() - t < 3.0
            assert all(q.poll() is None for q in slow), "the slow queries were still running meanwhile"
        finally:
            outs = [q.communicate(timeout=30) for q in slow]
        assert all("time limit" in err for _, err in outs), outs

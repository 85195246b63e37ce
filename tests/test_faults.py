"""Faults csmd must ride out or report: a full disk, a database locked by someone else,
a damaged database, one written by a newer csm."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from csmtest import Csmd, csm_json, db_rows, refused_start, run_csm, status, sync_now, wait_for
from lines import append, line


def uuids(db: Path) -> list[str]:
    return [r[0] for r in db_rows(db, "SELECT uuid FROM events ORDER BY uuid")]


def expected(n: int, start: int = 0) -> list[str]:
    return sorted(f"u{i}" for i in range(start, n))


def fat_line(i: int) -> bytes:
    return line(i, extra="x" * 400)


ROOT = os.geteuid() == 0
NO_DAC = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"] if ROOT else []
"""Run a command as root without the capabilities that override file permissions, so a folder's mode binds it."""
needs_permissions = pytest.mark.skipif(ROOT and not shutil.which("setpriv"),
                                       reason="root needs setpriv to be bound by file permissions")


def scribble(db: Path) -> None:
    """Overwrite two of the stored lines' pages in the middle of the ``events`` table (not the header, not a
    table every start reads: the middle of the file was once lines' pages, and is ``search_backfill`` now):
    damage only a full read finds."""
    conn = sqlite3.connect(db)
    try:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [n for (n,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' ORDER BY pageno")]
    finally:
        conn.close()
    assert len(leaves) > 6, leaves
    with open(db, "r+b") as fh:
        for n in leaves[len(leaves) // 2 : len(leaves) // 2 + 2]:
            fh.seek((n - 1) * size)
            fh.write(b"\xa5" * size)


def fill(folder: Path) -> None:
    """Write into ``folder`` until its filesystem has no space left."""
    with open(folder / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB filesystem (tmpfs) for the database; needs root. A new archive of a few lines takes
    about 1.5 MB there (its WAL, checkpointed only past 4 MB), so 2 MB leaves room to start."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2048k,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


class TestDiskFull:
    def test_full_disk_rolls_back_backs_off_and_resumes_when_space_returns(
        self, small_disk: Path, tmp_path: Path, projects: Path
    ) -> None:
        db = small_disk / "csm.db"
        csmd = Csmd(tmp_path, ["--db", str(db)])
        f = projects / "p" / "s.jsonl"
        append(f, b"".join(fat_line(i) for i in range(100)))
        csmd.start()
        try:
            assert uuids(db) == expected(100)
            append(f, b"".join(fat_line(i) for i in range(100, 6000)))  # ~2.6 MB: more than the disk holds
            status = wait_for(lambda: (s := csm_json("status")).get("last_error") and s, 20, "the error in status")
            assert "full" in status["last_error"], status["last_error"]
            human = run_csm("status")
            assert human.returncode == 0 and re.search(r"^error\s+database: .*full", human.stdout, re.M), human.stdout
            # Each failed batch rolled back with its checkpoint: rows match the checkpoint exactly.
            offset = db_rows(db, "SELECT last_position FROM sync_metadata")[0][0]
            stored = db_rows(db, "SELECT count(*) FROM events")[0][0]
            assert f.read_bytes()[:offset].count(b"\n") == stored
            assert stored < 6000
            # Exponential backoff, 0.5, 1, 2 s … between attempts, even while appends keep
            # arriving (each one a hint that must not cut the pause short).
            written = [6000]
            keep_writing = threading.Event()

            def writer() -> None:
                while not keep_writing.wait(0.1):
                    append(f, fat_line(written[0]))
                    written[0] += 1

            t = threading.Thread(target=writer)
            t.start()
            try:
                wait_for(lambda: "retrying in 2.0 s" in csmd.log(), 30, "the backoff to reach 2 s")
            finally:
                keep_writing.set()
                t.join()
            failures = re.findall(r"^(\S+ \S+) ERROR csm.sync: database: .*full.*retrying in ([\d.]+) s$",
                                  csmd.log(), re.M)
            delays = [float(d) for _, d in failures]
            assert delays[:3] == [0.5, 1.0, 2.0], delays
            times = [datetime.strptime(ts, "%Y-%m-%d %H:%M:%S,%f") for ts, _ in failures]
            for (before, delay), after in zip(zip(times, delays), times[1:]):
                assert (after - before).total_seconds() >= delay * 0.9, (failures, "a retry came early")
            assert csmd.alive
            subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
            total = written[0]
            wait_for(lambda: db_rows(db, "SELECT count(*) FROM events")[0][0] == total, 30, "ingestion to resume")
            assert uuids(db) == expected(total), "every line once"
            wait_for(lambda: csm_json("status").get("last_error") is None, 10, "the error to clear")
            assert "ingestion resumed" in csmd.log()
        finally:
            if csmd.alive:
                assert csmd.stop() == 0


class TestLocked:
    def test_a_write_lock_held_elsewhere_delays_but_loses_nothing(self, csmd: Csmd, projects: Path,
                                                                  db: Path) -> None:
        f = projects / "p" / "s.jsonl"
        append(f, b"".join(line(i) for i in range(10)))
        csmd.start()
        other = sqlite3.connect(db, isolation_level=None)  # a user's sqlite3 shell
        other.execute("BEGIN EXCLUSIVE")
        try:
            append(f, b"".join(line(i) for i in range(10, 50)))
            status = wait_for(lambda: (s := csm_json("status")).get("last_error") and s, 15, "the lock to be reported")
            assert "locked" in status["last_error"]
            assert db_rows(db, "SELECT count(*) FROM events")[0][0] == 10
        finally:
            other.execute("ROLLBACK")
            other.close()
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events")[0][0] == 50, 15, "ingestion after the lock")
        assert uuids(db) == expected(50)
        assert csmd.alive


class TestDamagedDatabase:
    def test_garbage_file_refused_with_the_way_out_then_rebuilt(self, csmd: Csmd, projects: Path, db: Path) -> None:
        append(projects / "p" / "s.jsonl", b"".join(line(i) for i in range(20)))
        db.parent.mkdir(parents=True)
        db.write_bytes(os.urandom(8192))
        code, out = refused_start(csmd)
        assert code == 1
        assert out.strip().count("\n") == 0, out
        assert out.startswith("csmd: error: ")
        for needle in (str(db), "csm db check", "backup", "rebuild", "cannot bring back"):
            assert needle in out, (needle, out)
        check = run_csm("db", "check", "--db", str(db))
        assert check.returncode == 1 and str(db) in check.stderr and "Traceback" not in check.stderr
        db.rename(db.with_name("csm.db.damaged"))
        csmd.start()
        assert uuids(db) == expected(20), "rebuilt from the transcripts that still exist"

    def test_check_finds_damage_inside_the_file(self, csmd: Csmd, projects: Path, db: Path) -> None:
        append(projects / "p" / "s.jsonl", b"".join(fat_line(i) for i in range(300)))
        csmd.start()
        ok = run_csm("db", "check", "--json")  # while csmd runs, on the configured path
        assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True, ok.stderr
        assert csmd.stop() == 0
        page = 4096
        pages = db.stat().st_size // page
        assert pages > 10
        with open(db, "r+b") as fh:  # scribble over pages in the middle (not the header)
            for n in range(pages // 2, pages // 2 + 4):
                fh.seek(n * page)
                fh.write(b"\xa5" * page)
        bad = run_csm("db", "check", "--full")
        assert bad.returncode == 1, (bad.stdout, bad.stderr)
        assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr, bad.stderr
        # SQLite either lists the problems or stops at the first malformed page
        assert bad.stdout.strip() or "malformed" in bad.stderr, bad.stderr
        assert str(db) in bad.stderr and "backup" in bad.stderr and "cannot come back" in bad.stderr

    def test_a_database_from_a_newer_csm_is_refused(self, csmd: Csmd, projects: Path, db: Path) -> None:
        append(projects / "p" / "s.jsonl", line(0))
        csmd.start()
        assert csmd.stop() == 0
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA user_version = 999")
        conn.commit()
        conn.close()
        code, out = refused_start(csmd)
        assert code == 1 and out.strip().count("\n") == 0, out
        assert str(db) in out and "newer csm" in out and "schema version 999" in out and "upgrade csm" in out
        assert db_rows(db, "SELECT count(*) FROM events") == [(1,)], "the newer database is left as it was"


class TestUnusablePaths:
    def test_a_database_path_that_cannot_exist_is_one_line(self, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        code, out = refused_start(Csmd(tmp_path, ["--db", str(blocker / "csm.db")]))
        assert code == 1 and out.strip().count("\n") == 0, out
        assert out.startswith("csmd: error: ") and str(blocker) in out


class TestDbCommands:
    def test_db_path_follows_the_config_and_the_running_daemon(self, csmd: Csmd, tmp_path: Path, db: Path) -> None:
        assert run_csm("db", "path").stdout.strip() == str(db)
        cfg = tmp_path / "config" / "csm" / "config.toml"
        cfg.parent.mkdir(parents=True)
        other = tmp_path / "elsewhere" / "archive.db"
        cfg.write_text(f"db = {str(other)!r}\n")
        assert run_csm("db", "path").stdout.strip() == str(other)
        cfg.unlink()
        running = tmp_path / "running.db"
        Csmd(tmp_path, ["--db", str(running)]).start()
        try:
            assert run_csm("db", "path").stdout.strip() == str(running)
        finally:
            run_csm("status")  # still answering
            pid = csm_json("status")["pid"]
            os.kill(pid, 15)
            wait_for(lambda: run_csm("status").returncode == 3, 15, "csmd to stop")
        missing = run_csm("db", "check", "--db", str(tmp_path / "nope.db"))
        assert missing.returncode == 1 and "no database file" in missing.stderr


class TestDamageNoticed:
    """Item 12: damage past the header, and a database deleted or replaced under csmd, show in status."""

    @pytest.mark.parametrize("when", ["before start", "while running"])
    def test_damaged_pages_are_found_by_quick_check_and_shown(self, csmd: Csmd, tmp_path: Path, projects: Path,
                                                             db: Path, when: str) -> None:
        cfg = tmp_path / "config" / "csm" / "config.toml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text("check_interval_s = 0.5\n")
        append(projects / "p" / "s.jsonl", b"".join(fat_line(i) for i in range(300)))
        csmd.start()
        assert csmd.stop() == 0
        if when == "before start":
            scribble(db)
        csmd.start()
        if when == "while running":
            wait_for(lambda: status().get("db_checked_at"), 15, "the first check")
            assert status()["db_problem"] is None
            assert re.search(r"^database\s+.*quick_check ok", run_csm("status").stdout, re.M)
            scribble(db)
        st = wait_for(lambda: (s := status()).get("db_problem") and s, 15, "the damage in status")
        assert "quick_check found damage" in st["db_problem"] and str(db) in st["db_problem"], st
        human = run_csm("status")
        assert human.returncode == 0 and re.search(r"^db problem\s+quick_check found damage", human.stdout, re.M)
        assert "quick_check found damage" in csm_json("status")["db_problem"]
        append(projects / "p" / "s.jsonl", fat_line(300))
        wait_for(lambda: "quick_check found damage" in csmd.log(), 10, "the damage in the log")
        time.sleep(1.5)  # three more checks: the same damage is logged once, not at each one
        assert csmd.log().count("quick_check found damage") == 1, csmd.log()
        assert csmd.alive

    @pytest.mark.parametrize("how", ["database deleted", "WAL deleted", "database replaced"])
    def test_a_database_deleted_or_replaced_under_csmd_is_noticed(self, csmd: Csmd, projects: Path, db: Path,
                                                                  tmp_path: Path, how: str) -> None:
        append(projects / "p" / "s.jsonl", b"".join(line(i) for i in range(20)))
        csmd.start()
        assert status()["db_problem"] is None
        if how == "database deleted":
            db.unlink()
        elif how == "WAL deleted":
            db.with_name("csm.db-wal").unlink()
        else:
            copy = tmp_path / "copy.db"
            shutil.copyfile(db, copy)
            os.replace(copy, db)
        word = "replaced" if how == "database replaced" else "deleted"
        st = wait_for(lambda: (s := status()).get("db_problem") and s, 10, "the problem in status")
        assert word in st["db_problem"] and "restart csmd" in st["db_problem"], st
        human = run_csm("status")
        assert human.returncode == 0 and re.search(rf"^db problem\s+the database.* {word}", human.stdout, re.M), \
            human.stdout
        assert word in csmd.log()


class TestWhatIsActuallyWrong:
    """Item 13: no space, no permission and a lock are named as such, never as damage."""

    def test_a_full_disk_at_start_says_no_space_not_restore(self, small_disk: Path, tmp_path: Path,
                                                             projects: Path) -> None:
        db = small_disk / "csm.db"
        append(projects / "p" / "s.jsonl", b"".join(line(i) for i in range(20)))
        csmd = Csmd(tmp_path, ["--db", str(db)])
        fill(small_disk)
        code, out = refused_start(csmd)
        assert code == 75 and out.strip().count("\n") == 0, (code, out)
        assert "no space left" in out and str(small_disk) in out and "free some space" in out, out
        for misleading in ("backup", "rebuild", "csm db check"):
            assert misleading not in out, out
        (small_disk / "filler").unlink()
        csmd.start()  # space was all it needed
        assert uuids(db) == expected(20)
        assert csmd.stop() == 0

    @needs_permissions
    @pytest.mark.parametrize("what", ["folder", "database"])
    def test_an_unwritable_folder_or_database_says_no_permission(self, csmd: Csmd, tmp_path: Path,
                                                                 projects: Path, db: Path, what: str) -> None:
        append(projects / "p" / "s.jsonl", b"".join(line(i) for i in range(20)))
        csmd.start()
        assert csmd.stop() == 0
        target = db.parent if what == "folder" else db
        target.chmod(0o500 if what == "folder" else 0o400)
        try:
            code, out = refused_start(Csmd(tmp_path, prefix=NO_DAC))
        finally:
            target.chmod(0o700 if what == "folder" else 0o600)
        assert code == 77 and out.strip().count("\n") == 0, (code, out)
        assert "no permission" in out and f"chmod u+w {target}" in out, out
        for misleading in ("backup", "rebuild", "csm db check"):
            assert misleading not in out, out
        csmd.start()
        assert uuids(db) == expected(20)

    def test_sync_now_reports_a_lock_held_by_another_program_at_once(self, csmd: Csmd, projects: Path,
                                                                     db: Path) -> None:
        f = projects / "p" / "s.jsonl"
        append(f, b"".join(line(i) for i in range(10)))
        csmd.start()
        other = sqlite3.connect(db, isolation_level=None)  # a user's sqlite3 shell, in this process
        other.execute("BEGIN EXCLUSIVE")
        try:
            append(f, b"".join(line(i) for i in range(10, 50)))
            for attempt in ("first", "during the backoff"):
                started = time.monotonic()
                r = run_csm("sync", "--now")
                took = time.monotonic() - started
                assert r.returncode == 75, (attempt, r.returncode, r.stderr)
                assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
                assert "locked" in r.stderr and f"pid {os.getpid()}" in r.stderr, r.stderr
                assert "keeps retrying" in r.stderr, r.stderr
                assert took < 20, (attempt, took)
            assert f"pid {os.getpid()}" in status()["last_error"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events")[0][0] == 50, 90, "ingestion after the lock")
        assert run_csm("sync", "--now").returncode == 0
        assert uuids(db) == expected(50)


class TestOneLineNotATraceback:
    """Item 14: an unreachable runtime folder; roots that went away."""

    @needs_permissions
    @pytest.mark.parametrize("how", ["mode 000", "another user's", "a file"])
    def test_status_with_an_unreachable_runtime_dir(self, how: str) -> None:
        if how == "another user's" and not ROOT:
            pytest.skip("needs root to make a folder of another user")
        base = Path(tempfile.mkdtemp(prefix="csm-", dir="/tmp"))  # short: socket paths are limited
        try:
            run = base / "run"
            if how == "a file":
                run.write_text("")
            else:
                run.mkdir(mode=0o700)
                if how == "mode 000":
                    run.chmod(0)
                else:
                    os.chown(run, 65534, 65534)
            r = subprocess.run([*NO_DAC, sys.executable, "-m", "csm.client", "status"], capture_output=True,
                               text=True, env={**os.environ, "XDG_RUNTIME_DIR": str(run)}, timeout=30)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        assert r.returncode == 3, (r.returncode, r.stderr)  # csmd cannot be reached: as good as not running
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert str(run) in r.stderr and "XDG_RUNTIME_DIR" in r.stderr, r.stderr
        assert ("not a folder" if how == "a file" else "no permission") in r.stderr, r.stderr

    def test_files_of_a_root_removed_or_deleted_are_not_present(self, tmp_path: Path) -> None:
        a, b = tmp_path / "a" / "projects", tmp_path / "b" / "projects"
        append(a / "p" / "s1.jsonl", line(0, session="s1"))
        append(b / "q" / "s2.jsonl", line(1, session="s2"))
        csmd = Csmd(tmp_path, ["--root", str(a), "--root", str(b)]).start()
        try:
            st = status()
            assert (st["files"], st["files_gone"], st["sessions_gone"]) == (2, 0, 0), st
            assert csmd.stop() == 0
            csmd = Csmd(tmp_path, ["--root", str(a)]).start()  # b is no longer followed
            st = status()
            assert (st["files"], st["files_gone"], st["sessions_gone"]) == (2 - 1, 1, 1), st
            shutil.rmtree(a)  # the root itself deleted while csmd runs
            sync_now()
            st = status()
            assert (st["files"], st["files_gone"], st["sessions_gone"]) == (0, 2, 2), st
            assert st["events"] == 2, "rows are kept"
        finally:
            if csmd.alive:
                assert csmd.stop() == 0

"""Damaged input with a real csmd: each bad line is recorded once and skipped, every other line is stored."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from lines import prompt, record
from csmtest import Csmd, current_raws, db_rows, run_csm, status, sync_now, wait_for


def good(i: int, text: str = "") -> bytes:
    return record(prompt(f"g{i}", "bad", None, f"fine {i} {text}"), ascii=False)


RECORD = good(100)
CASES: list[tuple[str, bytes, str]] = [  # (name, line without its newline, what the error must say)
    ("invalid JSON", b'{"type":"user","message":{"content":"cut he', "invalid JSON"),
    ("JSON array", b"[1, 2, 3]", "not an object"),
    ("JSON string", b'"just a string"', "not an object"),
    ("JSON number", b"42", "not an object"),
    ("JSON null", b"null", "not an object"),
    ("invalid UTF-8", b'{"type":"user","x":"\xff\xfe caf\xe9"}', "invalid UTF-8"),
    ("NUL run", b"\0" * 300, "NUL bytes"),
    ("two records spliced", good(50) + good(51), "invalid JSON"),
    ("torn record spliced with the next", good(52)[:30] + good(53), "invalid JSON"),
    ("empty line", b"", "empty line"),
]


def build() -> tuple[bytes, list[str], list[tuple[int, int, str, bytes]]]:
    """A file mixing good and bad lines: (its bytes, the good lines in order, the expected errors)."""
    data = bytearray()
    kept: list[str] = []
    errors: list[tuple[int, int, str, bytes]] = []
    for i, (_, bad, why) in enumerate(CASES):
        line = good(i)
        data += line + b"\n"
        kept.append(line.decode())
        errors.append((len(data), len(bad), why, bad[:200]))
        data += bad + b"\n"
    # A record after NUL bytes (an ext4 crash left NULs where unflushed bytes were; Claude Code's
    # next append landed after them): the NULs are a bad line, the record is kept.
    errors.append((len(data), 64, "NUL bytes before a record", b"\0" * 64))
    data += b"\0" * 64 + RECORD + b"\n"
    kept.append(RECORD.decode())
    # Not line breaks: U+2028/U+2029 inside strings, and a CR before the newline (kept as written).
    for line in (good(60, "a\u2028b\u2029c"), good(61) + b"\r"):
        data += line + b"\n"
        kept.append(line.decode())
    return bytes(data), kept, errors


def start_with_bad_file(csmd: Csmd, projects: Path) -> tuple[Path, bytes, list[str], list[tuple[int, int, str, bytes]]]:
    f = projects / "p" / "bad.jsonl"
    f.parent.mkdir(parents=True)
    data, kept, errors = build()
    f.write_bytes(data)
    csmd.start()
    return f, data, kept, errors


class TestBadLines:
    def test_each_bad_line_is_recorded_and_the_rest_is_stored(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f, data, kept, errors = start_with_bad_file(csmd, projects)
        assert current_raws(db, f) == kept
        stored = db_rows(db, "SELECT line_offset, length, error, head FROM sync_errors WHERE file_path = ? "
                         "ORDER BY line_offset", str(f))
        assert [(o, n, h) for o, n, _, h in stored] == [(o, n, h) for o, n, _, h in errors]
        for (_, _, error, _), (_, _, why, _) in zip(stored, errors):
            assert why in error, (why, error)
        u2028 = db_rows(db, "SELECT raw FROM lines WHERE uuid = 'g60'")[0][0]
        assert "\u2028" in u2028 and "\u2029" in u2028
        salvaged = db_rows(db, "SELECT line_offset FROM lines WHERE uuid = 'g100'")[0][0]
        assert salvaged == errors[-1][0] + 64

        # Appends after bad lines go on as usual, and a later sync records nothing twice.
        with open(f, "ab") as out:
            out.write(good(70) + b"\n" + b"{oops\n")
        sync_now()
        assert current_raws(db, f)[-1] == good(70).decode()
        n = len(errors) + 1
        assert status()["errors"] == n

        human = run_csm("status")
        assert f"bad lines  {n} (csm query errors)" in human.stdout, human.stdout
        listed = json.loads(run_csm("query", "errors", "--json").stdout)
        assert len(listed) == n and set(listed[0]) == {"file", "offset", "length", "error", "head"}
        assert [r["offset"] for r in listed] == [o for o, *_ in errors] + [len(data) + len(good(70)) + 1]
        nul = next(r for r in listed if r["length"] == 300)
        assert nul["head"] == "\\x00" * 200 and nul["file"] == str(f)
        utf8 = next(r for r in listed if "UTF-8" in r["error"])
        assert utf8["head"] == '{"type":"user","x":"\\xff\\xfe caf\\xe9"}'
        rows = list(csv.reader(io.StringIO(run_csm("query", "errors", "--csv").stdout)))
        assert rows[0] == ["file", "offset", "length", "error", "head"] and len(rows) == n + 1
        table = run_csm("query", "errors").stdout.splitlines()
        assert table[0].split() == ["file", "offset", "length", "error", "head"] and len(table) == n + 2

    def test_re_reading_a_file_counts_its_bad_lines_once(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f, data, kept, errors = start_with_bad_file(csmd, projects)
        tmp = f.with_name("bad.tmp")
        tmp.write_bytes(good(90) + b"\n" + data)  # rewritten: everything moved by one line
        os.replace(tmp, f)
        sync_now()
        assert current_raws(db, f) == [good(90).decode()] + kept
        shift = len(good(90)) + 1
        stored = db_rows(db, "SELECT line_offset, generation FROM sync_errors ORDER BY line_offset")
        assert stored == [(o + shift, 1) for o, *_ in errors]
        assert db_rows(db, "SELECT count(*) FROM events")[0][0] == len(kept) + 1

    def test_a_10_mb_line_is_stored(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "big.jsonl"
        f.parent.mkdir(parents=True)
        big = good(0, "y" * (10 * 1024 * 1024))
        f.write_bytes(good(1) + b"\n" + big + b"\n" + good(2) + b"\n")
        csmd.start()
        assert current_raws(db, f) == [good(1).decode(), big.decode(), good(2).decode()]
        assert status()["errors"] == 0

    def test_a_line_over_max_line_bytes_is_skipped_unread(self, csmd: Csmd, projects: Path, db: Path,
                                                          tmp_path: Path) -> None:
        """Whether it fits in one read (checked per line) or not (skipped by scanning for its newline),
        and also while it is still being written."""
        config = tmp_path / "config" / "csm" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text("max_line_bytes = 300000\nbatch_bytes = 65536\n")
        f = projects / "p" / "huge.jsonl"
        f.parent.mkdir(parents=True)
        medium, huge = good(1, "m" * 500_000), good(3, "h" * 3_000_000)
        parts = [good(0), medium, good(2), huge, good(4)]
        f.write_bytes(b"".join(x + b"\n" for x in parts) + huge[:2_000_000])
        csmd.start()
        assert current_raws(db, f) == [good(0).decode(), good(2).decode(), good(4).decode()]
        with open(f, "ab") as out:  # the line being written completes
            out.write(huge[2_000_000:] + b"\n" + good(5) + b"\n")
        sync_now()
        assert current_raws(db, f) == [good(i).decode() for i in (0, 2, 4, 5)]
        offsets = [sum(len(x) + 1 for x in parts[:i]) for i in (1, 3, 5)]
        stored = db_rows(db, "SELECT line_offset, length, error, head FROM sync_errors ORDER BY line_offset")
        assert [(o, n, h) for o, n, _, h in stored] == [
            (offsets[0], len(medium), medium[:200]), (offsets[1], len(huge), huge[:200]),
            (offsets[2], len(huge), huge[:200])]
        assert all("over the 300000-byte limit (max_line_bytes)" in e for _, _, e, _ in stored)

    def test_a_record_after_nuls_first_in_its_batch_is_kept_and_stalls_nothing(self, csmd: Csmd, projects: Path,
                                                                                db: Path) -> None:
        """Found by test_hostile's generated junk: when the line with NULs before a record came first in a
        batch (appended alone), storing it raised and the file's checkpoint never moved again."""
        f = projects / "p" / "nuls.jsonl"
        f.parent.mkdir(parents=True)
        f.write_bytes(good(0) + b"\n")
        csmd.start()
        wait_for(lambda: current_raws(db, f) == [good(0).decode()], 10, "the first line")
        with open(f, "ab") as out:
            out.write(b"\0" * 8 + good(1) + b"\n")
        wait_for(lambda: len(current_raws(db, f)) == 2, 10, "the record after the NULs")
        with open(f, "ab") as out:
            out.write(good(2) + b"\n")
        wait_for(lambda: len(current_raws(db, f)) == 3, 10, "the line after it")
        assert current_raws(db, f) == [good(0).decode(), good(1).decode(), good(2).decode()]
        assert db_rows(db, "SELECT length, error FROM sync_errors WHERE file_path = ?", str(f)) == [
            (8, f"8 NUL bytes before a record (the record after them is kept at offset {len(good(0)) + 9})")]
        assert "UnboundLocalError" not in csmd.log()

    def test_empty_file_then_lines(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "empty.jsonl"
        f.parent.mkdir(parents=True)
        f.touch()
        csmd.start()
        assert db_rows(db, "SELECT last_position, gone_at FROM sync_metadata WHERE file_path = ?", str(f)) == [(0, None)]
        assert status()["errors"] == 0 and current_raws(db, f) == []
        f.write_bytes(good(0) + b"\n")
        sync_now()
        assert current_raws(db, f) == [good(0).decode()]


NOBODY = 65534


def run_ok(probe: Any) -> Any:
    """``probe()``, or None while csmd is not answering yet."""
    try:
        return probe()
    except AssertionError:
        return None


def unprivileged() -> list[str]:
    """How to run csmd so that chmod 000 stops its reads: as it is, or, for root (who reads anything),
    as nobody through setpriv. Skips when neither works."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    try:
        r = subprocess.run([*prefix, sys.executable, "-c", "import csm.daemon.app"], capture_output=True, cwd="/")
    except FileNotFoundError:
        pytest.skip("running as root without setpriv: chmod 000 does not stop root's reads, so an unreadable "
                    "file cannot be made")
    if r.returncode != 0:
        pytest.skip("running as root, and csm cannot be imported as nobody (setpriv): an unreadable file cannot "
                    f"be made: {r.stderr.decode(errors='replace').strip()[-200:]}")
    return prefix


def test_unreadable_file_is_reported_then_read_once_it_can_be(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    prefix = unprivileged()
    base = Path(tempfile.mkdtemp(prefix="csm-unreadable-", dir="/tmp"))  # reachable by nobody, unlike tmp_path
    try:
        for name, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                          ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache"), ("XDG_RUNTIME_DIR", "run")):
            (base / sub).mkdir(mode=0o700)
            monkeypatch.setenv(name, str(base / sub))
        f = base / "projects" / "p" / "locked.jsonl"
        f.parent.mkdir(parents=True)
        f.write_bytes(good(0) + b"\n")
        if prefix:
            for p in [base, *base.rglob("*")]:
                os.chown(p, NOBODY, NOBODY)
        f.chmod(0)
        db = base / "data" / "csm" / "csm.db"
        csmd = Csmd(base, ["--root", str(base / "projects")], prefix)

        def csm(*args: str) -> Any:
            """The real CLI as the daemon's user (csmd answers only its own uid)."""
            r = subprocess.run([*prefix, sys.executable, "-m", "csm.client", *args, "--json"], capture_output=True,
                               text=True, timeout=60, cwd="/")
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        def errors() -> int:
            return csm("status")["errors"]

        try:
            csmd.start(wait=False)
            wait_for(lambda: csmd.alive and db.exists() and run_ok(lambda: csm("status").get("last_sync_at")),
                     30, "csmd's first scan")
            assert errors() == 1
            assert csm("query", "errors") == [{"file": str(f), "offset": None, "length": 0,
                                               "error": "cannot read file: Permission denied", "head": ""}]
            csm("sync", "--now")
            assert errors() == 1, "recorded once, not at every rescan"
            f.chmod(0o600)
            csm("sync", "--now")
            assert current_raws(db, f) == [good(0).decode()]
            assert errors() == 0, "the error is cleared once the file can be read"
        finally:
            if csmd.alive:
                assert csmd.stop() == 0, csmd.log()
    finally:
        shutil.rmtree(base, ignore_errors=True)

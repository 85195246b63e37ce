"""A last line without its newline (issue 10 item 3).

csm waits for ``\\n`` while a line is being written. A file whose last line is a complete JSON
object that never gets one (a copy, a backup, a writer that died) has it stored once the file has
stayed unchanged for ``final_line_after_s``; a newline arriving later adds nothing, and bytes that
continue the line make the file read again as a new generation (nothing doubled, nothing lost).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from csmtest import Csmd, current_raws, db_rows, sync_now, wait_for
from lines import append, line
from test_export import export

QUIET_S = 0.3


@pytest.fixture
def quick(tmp_path: Path) -> None:
    cfg = tmp_path / "config" / "csm" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"final_line_after_s = {QUIET_S}\n")


def stored_after_syncs(db: Path, f: Path, n: int) -> list[str]:
    """Rescan until ``f`` has ``n`` current rows (the final line needs a rescan after its quiet time)."""
    def enough() -> list[str]:
        sync_now()
        rows = current_raws(db, f)
        return rows if len(rows) >= n else []

    return wait_for(enough, 10, f"{n} rows of {f.name}")


def final_line_stored(csmd: Csmd, projects: Path, db: Path) -> tuple[Path, bytes]:
    """A file of one line and a final line without its newline, both stored by a started csmd."""
    f = projects / "p" / "s.jsonl"
    last = line(1).rstrip(b"\n")
    append(f, line(0) + last)
    csmd.start()
    stored_after_syncs(db, f, 2)
    return f, last


def raws(*lines: bytes) -> list[str]:
    return [x.rstrip(b"\n").decode() for x in lines]


@pytest.mark.usefixtures("quick")
class TestFinalLine:
    def test_a_complete_last_line_without_newline_is_stored_once(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "s.jsonl"
        last = line(2).rstrip(b"\n")
        append(f, line(0) + line(1) + last)
        csmd.start()
        assert stored_after_syncs(db, f, 3) == raws(line(0), line(1), last)
        assert export(str(f)) == f.read_bytes(), "the export has no newline the file does not have"
        # The newline arrives after all: no second row, no bad "empty line"; the next line is read.
        append(f, b"\n")
        sync_now()
        append(f, line(3))
        wait_for(lambda: len(current_raws(db, f)) == 4, 10, "the line after the newline")
        assert current_raws(db, f) == raws(line(0), line(1), last, line(3))
        assert db_rows(db, "SELECT count(*) FROM events") == [(4,)]
        assert db_rows(db, "SELECT count(*) FROM sync_errors") == [(0,)]
        assert export(str(f)) == f.read_bytes()

    def test_a_newline_written_while_csmd_was_stopped_adds_nothing(self, csmd: Csmd, projects: Path,
                                                                   db: Path) -> None:
        f, last = final_line_stored(csmd, projects, db)
        assert csmd.stop() == 0
        append(f, b"\n" + line(2))
        csmd.start()
        sync_now()
        assert current_raws(db, f) == raws(line(0), last, line(2))
        assert db_rows(db, "SELECT count(*), (SELECT count(*) FROM sync_errors) FROM events") == [(3, 0)]

    def test_a_stored_final_line_that_grows_is_read_again_without_doubling(self, csmd: Csmd, projects: Path,
                                                                          db: Path) -> None:
        f, last = final_line_stored(csmd, projects, db)
        append(f, b"   \n" + line(2))  # the same line went on (trailing blanks): the file was rewritten
        wait_for(lambda: current_raws(db, f) == raws(line(0), last + b"   ", line(2)), 10, "the new generation")
        # line 0 re-attached (one row); the short final line stays as a row of the old generation.
        assert db_rows(db, "SELECT count(*) FROM events") == [(4,)]
        assert db_rows(db, "SELECT raw FROM lines WHERE NOT current") == [(last.decode(),)]
        assert db_rows(db, "SELECT count(*) FROM sync_errors") == [(0,)]
        assert export(str(f)) == f.read_bytes()

    def test_a_line_still_being_written_is_never_stored(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "s.jsonl"
        whole = line(1)
        append(f, line(0) + whole[:30])
        csmd.start()
        stored_after_syncs(db, f, 1)
        marker = projects / "p" / "marker.jsonl"
        append(marker, line(0, "marker") + line(1, "marker").rstrip(b"\n"))
        stored_after_syncs(db, marker, 2)  # a later file's final line has been stored meanwhile ...
        assert current_raws(db, f) == raws(line(0))  # ... and the half line is still not
        assert db_rows(db, "SELECT count(*) FROM sync_errors") == [(0,)]
        append(f, whole[30:])
        wait_for(lambda: current_raws(db, f) == raws(line(0), whole), 10, "the completed line")


def test_by_default_a_final_line_waits_a_while(csmd: Csmd, projects: Path, db: Path) -> None:
    """Without the short quiet time of the tests, two quick rescans do not store it (a writer may be mid-line)."""
    f = projects / "p" / "s.jsonl"
    append(f, line(0) + line(1).rstrip(b"\n"))
    csmd.start()
    sync_now()
    sync_now()
    assert current_raws(db, f) == raws(line(0))

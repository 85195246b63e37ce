"""File identity: every way a transcript can change under csmd, with a real csmd and real files.

After each case the database must hold exactly the lines the files held, each once: the rows of
a file's current generation are its lines in order, and every row ever stored (old generations
included) is each distinct line seen, never a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from lines import prompt, record
from csmtest import (
    REAL, Csmd, all_raws, current_raws, db_rows, file_lines, run_csm, status, sync_now, wait_for,
)


def rec(i: int, session: str = "s1", pad: int = 0, **extra: object) -> str:
    """One transcript line (text, no newline); ``pad`` makes it longer."""
    return record(prompt(f"{session}-u{i}", session, f"2026-11-01T10:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
                         f"hello {i} " + "x" * pad, **extra)).decode()


def write(path: Path, lines: list[str], mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode, encoding="utf-8") as f:
        f.write("".join(x + "\n" for x in lines))


def checkpoint(db: Path, path: Path) -> tuple[int, int, int, str | None]:
    """(file_id, generation, offset, gone_at) of the checkpoint at ``path``."""
    rows = db_rows(db, "SELECT file_id, generation, last_position, gone_at FROM sync_metadata WHERE file_path = ?",
                   str(path))
    assert len(rows) == 1, rows
    return rows[0]


def expect(db: Path, current: dict[Path, list[str]], ever: list[str]) -> None:
    """Each file's current rows are exactly its lines; all rows are ``ever``, each line once."""
    for path, lines in current.items():
        assert current_raws(db, path) == lines, path
    assert all_raws(db) == dict(Counter(ever))


class TestAppend:
    def test_appended_lines_arrive_once(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        a = [rec(i) for i in range(3)]
        write(f, a)
        csmd.start()
        b = [rec(i) for i in range(3, 6)]
        write(f, b, "a")
        wait_for(lambda: len(current_raws(db, f)) == 6, what="appended lines")
        sync_now()
        expect(db, {f: a + b}, a + b)
        assert checkpoint(db, f)[1:3] == (0, f.stat().st_size)

    def test_partial_line_waits_however_long(self, csmd: Csmd, projects: Path, db: Path) -> None:
        """A several-MB line arriving in pieces is stored once, whole, when its newline comes."""
        f = projects / "p" / "s1.jsonl"
        write(f, [rec(0)])
        csmd.start()
        big = rec(1, pad=6 * 1024 * 1024)
        pieces = [big[i : i + 1_500_000] for i in range(0, len(big), 1_500_000)]
        for piece in pieces:
            with open(f, "a") as out:
                out.write(piece)
            sync_now()
            assert current_raws(db, f) == [rec(0)], "a line without its newline must not be stored"
        with open(f, "a") as out:
            out.write("\n")
        wait_for(lambda: len(current_raws(db, f)) == 2, what="the completed long line")
        expect(db, {f: [rec(0), big]}, [rec(0), big])
        assert db_rows(db, "SELECT count(*) FROM sync_errors")[0][0] == 0


class TestTruncation:
    def test_truncated_below_the_offset(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        lines = [rec(i) for i in range(5)]
        write(f, lines)
        csmd.start()
        file_id = checkpoint(db, f)[0]
        os.truncate(f, len("".join(x + "\n" for x in lines[:2])))
        sync_now()
        expect(db, {f: lines[:2]}, lines)  # the cut lines keep their rows, under the old generation
        assert checkpoint(db, f)[:2] == (file_id, 1)
        more = [rec(i) for i in range(10, 12)]
        write(f, more, "a")
        sync_now()
        expect(db, {f: lines[:2] + more}, lines + more)

    def test_shrank_but_not_below_the_offset(self, csmd: Csmd, projects: Path, db: Path) -> None:
        """A partial last line that is cut away (a torn tail repaired) makes the file shrink."""
        f = projects / "p" / "s1.jsonl"
        lines = [rec(i, pad=500) for i in range(3)]  # over 1 KB: the head hash cannot see the cut
        write(f, lines)
        with open(f, "a") as out:
            out.write(rec(3)[:40])
        csmd.start()
        assert current_raws(db, f) == lines
        os.truncate(f, len("".join(x + "\n" for x in lines)))
        sync_now()
        assert checkpoint(db, f)[1] == 1, "a shrunk file is read again"
        write(f, [rec(4)], "a")
        sync_now()
        expect(db, {f: lines + [rec(4)]}, lines + [rec(4)])

    def test_truncated_and_regrown_past_the_offset(self, csmd: Csmd, projects: Path, db: Path) -> None:
        """Same inode, same first KB, longer than before, different bytes before the old offset: only
        the hash of the bytes before the offset can tell; it must."""
        f = projects / "p" / "s1.jsonl"
        first = rec(0, pad=2000)  # longer than the 1 KB head: the head hash cannot see the change
        old = [first, rec(1), rec(2)]
        write(f, old)
        csmd.start()
        inode = f.stat().st_ino
        csmd.stop()
        new = [first, rec(1, pad=7), rec(5), rec(6), rec(7)]
        with open(f, "r+") as out:  # rewritten in place: same inode
            out.truncate(0)
            out.write("".join(x + "\n" for x in new))
        assert f.stat().st_ino == inode and f.stat().st_size > checkpoint(db, f)[2]
        csmd.start()
        sync_now()
        expect(db, {f: new}, old + new[1:])
        assert "rewritten before the checkpoint" in csmd.log()


class TestReplacement:
    def test_atomic_rename_over_the_file(self, csmd: Csmd, projects: Path, db: Path) -> None:
        """A tool rewrites the file (some lines dropped, some added) and renames it over the old one."""
        f = projects / "p" / "s1.jsonl"
        old = [rec(i) for i in range(6)]
        write(f, old)
        csmd.start()
        file_id = checkpoint(db, f)[0]
        new = [old[0], old[2], old[3], rec(20), old[5], rec(21)]
        tmp = f.with_name("s1.jsonl.tmp")
        write(tmp, new)
        inode = f.stat().st_ino
        os.replace(tmp, f)
        assert f.stat().st_ino != inode
        wait_for(lambda: current_raws(db, f) == new, what="the replaced file's lines")
        sync_now()
        expect(db, {f: new}, old + [rec(20), rec(21)])
        assert checkpoint(db, f)[:2] == (file_id, 1)
        assert "replaced (new inode)" in csmd.log()

    def test_same_inode_new_head(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        old = [rec(i) for i in range(4)]
        write(f, old)
        csmd.start()
        csmd.stop()
        new = [rec(0, session="other")] + old[1:] + [rec(9)]
        with open(f, "r+") as out:
            out.write("".join(x + "\n" for x in new))  # overwritten from byte 0, not truncated
        csmd.start()
        sync_now()
        expect(db, {f: new}, old + [new[0], rec(9)])
        assert "replaced (new head)" in csmd.log()

    def test_byte_identical_lines_are_two_rows_and_stay_two(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        a, b, c = rec(0), rec(1), rec(2)
        write(f, [a, a, b])
        csmd.start()
        expect(db, {f: [a, a, b]}, [a, a, b])
        tmp = f.with_name(".s1.tmp")
        write(tmp, [a, a, b, c])
        os.replace(tmp, f)
        sync_now()
        expect(db, {f: [a, a, b, c]}, [a, a, b, c])
        write(tmp, [a, c])
        os.replace(tmp, f)
        sync_now()
        expect(db, {f: [a, c]}, [a, a, b, c])  # one copy of a and b left the file: their rows stay


class TestRename:
    def test_moved_while_watching_keeps_its_offset(self, csmd: Csmd, projects: Path, db: Path) -> None:
        a = projects / "p" / "s1.jsonl"
        lines = [rec(i) for i in range(4)]
        write(a, lines)
        csmd.start()
        file_id, _, offset, _ = checkpoint(db, a)
        b = projects / "p" / "s2.jsonl"
        os.rename(a, b)
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM sync_metadata WHERE file_path = ?", str(b))[0][0],
                 what="the checkpoint to follow the rename")
        assert checkpoint(db, b) == (file_id, 0, offset, None)
        bak = b.with_name("s2.jsonl.bak")  # out of sight (not a .jsonl) and back: still the same file
        os.rename(b, bak)
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM sync_metadata WHERE file_path = ?", str(bak))[0][0],
                 what="the checkpoint to follow the file to its .bak name")
        sync_now()
        os.rename(bak, b)
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM sync_metadata WHERE file_path = ?", str(b))[0][0],
                 what="the checkpoint to come back")
        assert checkpoint(db, b) == (file_id, 0, offset, None)
        c = projects / "q" / "s2.jsonl"  # to another project folder
        c.parent.mkdir()
        os.rename(b, c)
        write(c, [rec(9)], "a")
        wait_for(lambda: len(current_raws(db, c)) == 5, what="the line appended after the move")
        sync_now()
        expect(db, {c: lines + [rec(9)]}, lines + [rec(9)])
        assert checkpoint(db, c)[:2] == (file_id, 0)
        s = db_rows(db, "SELECT session_id, project, lines, file_present FROM sessions")
        assert s == [("s2", "q", 5, 1)], "the session's figures follow its file"

    def test_moved_while_stopped_and_a_new_file_at_the_old_path(self, csmd: Csmd, projects: Path, db: Path
                                                               ) -> None:
        a = projects / "p" / "s1.jsonl"
        lines = [rec(i) for i in range(4)]
        write(a, lines)
        csmd.start()
        file_id, _, offset, _ = checkpoint(db, a)
        csmd.stop()
        b = projects / "p2" / "s1-moved.jsonl"
        b.parent.mkdir()
        os.rename(a, b)
        fresh = [rec(i, session="new") for i in range(3)]
        write(a, fresh)  # a new file where the old one was
        write(b, [rec(4)], "a")
        csmd.start()
        sync_now()
        assert checkpoint(db, b) == (file_id, 0, offset + len(rec(4)) + 1, None)
        assert checkpoint(db, a)[0] != file_id
        expect(db, {b: lines + [rec(4)], a: fresh}, lines + [rec(4)] + fresh)
        assert "renamed:" in csmd.log()


    def test_project_folder_renamed_while_watching_and_while_stopped(self, csmd: Csmd, projects: Path, db: Path
                                                                   ) -> None:
        a = projects / "proj-a" / "s1.jsonl"
        sub = projects / "proj-a" / "s1" / "subagents" / "agent-x1.jsonl"
        lines, sublines = [rec(i) for i in range(3)], [rec(i, session="s1-sub") for i in range(2)]
        write(a, lines)
        write(sub, sublines)
        csmd.start()
        ids = {checkpoint(db, a)[0], checkpoint(db, sub)[0]}
        os.rename(projects / "proj-a", projects / "proj-b")
        b, bsub = projects / "proj-b" / "s1.jsonl", projects / "proj-b" / "s1" / "subagents" / "agent-x1.jsonl"
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM sync_metadata WHERE file_path IN (?, ?)", str(b),
                                 str(bsub))[0][0] == 2, what="the checkpoints to follow the folder")
        sync_now()
        expect(db, {b: lines, bsub: sublines}, lines + sublines)
        csmd.stop()
        os.rename(projects / "proj-b", projects / "proj-c")
        csmd.start()
        sync_now()
        c, csub = projects / "proj-c" / "s1.jsonl", projects / "proj-c" / "s1" / "subagents" / "agent-x1.jsonl"
        expect(db, {c: lines, csub: sublines}, lines + sublines)
        assert {checkpoint(db, c)[0], checkpoint(db, csub)[0]} == ids
        assert db_rows(db, "SELECT count(*) FROM sync_metadata")[0][0] == 2
        assert dict(db_rows(db, "SELECT session_id, project FROM sessions")) == {"s1": "proj-c", "agent-x1": "proj-c"}


class TestDeletion:
    def test_deleted_file_keeps_its_rows(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        keep = projects / "p" / "s2.jsonl"
        lines = [rec(i) for i in range(3)]
        write(f, lines)
        write(keep, [rec(0, session="s2")])
        # The backup it is restored from below exists before the deletion, so it is on another inode:
        # a restore that happened to land on the freed inode would be a rename back (the next test).
        backup = projects.parent / "backup.jsonl"
        write(backup, lines + [rec(3)])
        csmd.start()
        f.unlink()
        wait_for(lambda: checkpoint(db, f)[3], what="the checkpoint to be marked gone")
        gone_at = checkpoint(db, f)[3]
        assert gone_at.startswith("20") and gone_at.endswith("Z")
        expect(db, {f: lines}, lines + [rec(0, session="s2")])
        present = dict(db_rows(db, "SELECT session_id, file_present FROM sessions"))
        assert present == {"s1": 0, "s2": 1}
        s = status()
        assert (s["sessions"], s["sessions_gone"], s["files"], s["files_gone"]) == (2, 1, 1, 1)
        human = run_csm("status").stdout
        assert "1 with source file gone" in human, human
        os.rename(backup, f)  # restored from a backup, one line longer
        sync_now()
        expect(db, {f: lines + [rec(3)]}, lines + [rec(3)] + [rec(0, session="s2")])
        assert checkpoint(db, f)[1:] == (1, f.stat().st_size, None), "the same checkpoint, read again, live"
        assert status()["sessions_gone"] == 0

    def test_new_file_on_a_deleted_files_inode_starts_from_zero(self, csmd: Csmd, projects: Path, db: Path
                                                                ) -> None:
        """While csmd is stopped (the deletion unseen) and while it runs.

        ext4 hands a freed inode to the next file created in its group, unless another process on
        a busy machine gets it first: each phase deletes victims until one inode is reused.
        """
        d = projects / "p"
        victims = {phase: [d / f"{phase}-old{k}.jsonl" for k in range(6)] for phase in ("stopped", "running")}
        ever = []
        for phase, paths in victims.items():
            for k, v in enumerate(paths):
                lines = [rec(i, session=v.stem, pad=50) for i in range(8)]
                write(v, lines)
                ever += lines
        csmd.start()
        for phase, paths in victims.items():
            if phase == "stopped":
                csmd.stop()
            new = [rec(i, session=f"new-{phase}", pad=80) for i in range(9)]  # longer than the old offset
            reuse = d / f"new-{phase}.jsonl"
            held: list[Path] = []  # candidates that got another inode fill the holes below the victim's
            for victim in paths:
                inode = victim.stat().st_ino
                victim.unlink()
                while len(held) < 200:
                    candidate = d / f"candidate{len(held)}.tmp"  # not a .jsonl: csmd ignores it
                    write(candidate, new)
                    got = candidate.stat().st_ino
                    if got == inode:
                        candidate.rename(reuse)
                        break
                    held.append(candidate)
                    if got > inode:
                        break  # the freed inode went elsewhere; try the next victim
                if reuse.exists():
                    break
            for c in held:
                c.unlink()
            if not reuse.exists():
                pytest.skip(f"the filesystem reused none of {len(paths)} freed inodes (a busy machine's other "
                            "processes took them): inode reuse cannot be forced here")
            if phase == "stopped":
                csmd.start()
            sync_now()
            ever += new
            expect(db, {reuse: new}, ever)
            assert checkpoint(db, victim)[3] is not None, "the deleted file's checkpoint is gone, not moved"
            assert checkpoint(db, reuse)[:3] == (checkpoint(db, reuse)[0], 0, reuse.stat().st_size)
            assert checkpoint(db, reuse)[0] != checkpoint(db, victim)[0]


class TestRowIdentity:
    def test_resumed_copies_and_lines_without_uuid(self, csmd: Csmd, projects: Path, db: Path) -> None:
        src = REAL / "-Users-dain-workspace-claude-code-log-sample"
        shutil.copytree(src, projects / src.name)
        other = projects / "p" / "s1.jsonl"
        unknown = [json.dumps({"type": "brand-new-type", "whatever": [1, {"x": None}]}),
                   json.dumps({"type": "queue-operation", "operation": "enqueue", "sessionId": "s1"}),
                   json.dumps({"no_type_at_all": True})]
        write(other, unknown)
        csmd.start()
        copies = db_rows(db, "SELECT file_path, session_id FROM lines WHERE uuid = ?",
                         "cc67b20e-4350-4a71-bc4f-8b64f2adb806")
        assert len(copies) == 3 and len({p for p, _ in copies}) == 3 and len({s for _, s in copies}) == 3
        files = sorted((projects / src.name).glob("*.jsonl")) + [other]
        expect(db, {p: file_lines(p) for p in files}, [x for p in files for x in file_lines(p)])
        no_uuid = Counter(json.loads(x).get("type") for p in files for x in file_lines(p) if "uuid" not in json.loads(x))
        stored = Counter(dict(db_rows(db, "SELECT type, count(*) FROM lines WHERE uuid IS NULL GROUP BY type")))
        assert stored == no_uuid and stored["summary"] > 0 and stored["brand-new-type"] == 1
        assert db_rows(db, "SELECT raw FROM lines WHERE type IS NULL") == [(unknown[2],)]


def path_of(db: Path, file_id: int) -> list[tuple[str, str | None]]:
    return db_rows(db, "SELECT file_path, gone_at FROM sync_metadata WHERE file_id = ?", file_id)


class TestRenameChains:
    """Renames faster than csmd: the file is claimed by its identity wherever it now is."""

    def test_renamed_twice_before_csmd_looks(self, csmd: Csmd, projects: Path, db: Path) -> None:
        a = projects / "p" / "a.jsonl"
        s1 = projects / "proj-a" / "s1.jsonl"
        lines, s1lines = [rec(i, session="a") for i in range(60)], [rec(i, session="s1") for i in range(5)]
        write(a, lines)
        write(s1, s1lines)
        csmd.start()
        ids = (checkpoint(db, a)[0], checkpoint(db, s1)[0])
        b, c = a.with_name("b.jsonl"), a.with_name("c.jsonl")
        os.rename(a, b)
        os.rename(b, c)  # csmd sees a -> b after b is already gone
        os.rename(projects / "proj-a", projects / "proj-b")
        os.rename(projects / "proj-b", projects / "proj-c")
        more = [rec(i, session="a") for i in range(60, 63)]
        write(c, more, "a")
        s1c = projects / "proj-c" / "s1.jsonl"
        wait_for(lambda: len(current_raws(db, c)) == 63 and current_raws(db, s1c), what="the renamed files")
        sync_now()
        expect(db, {c: lines + more, s1c: s1lines}, lines + more + s1lines)
        assert path_of(db, ids[0]) == [(str(c), None)] and path_of(db, ids[1]) == [(str(s1c), None)]
        assert db_rows(db, "SELECT count(*) FROM sync_metadata")[0][0] == 2

    def test_renamed_during_a_catch_up(self, csmd: Csmd, projects: Path, db: Path) -> None:
        """Two renames 0.3 s apart while csmd reads a large file, then appends at the last name."""
        a = projects / "p" / "big.jsonl"
        lines = [rec(i, session="big", pad=300) for i in range(15000)]
        write(a, lines)
        csmd.start(wait=False)
        wait_for(lambda: db.exists() and db_rows(db, "SELECT count(*) FROM sqlite_master WHERE name = 'events'")[0][0]
                 and db_rows(db, "SELECT count(*) FROM events")[0][0], what="the catch-up to start")
        b, c = a.with_name("b.jsonl"), a.with_name("c.jsonl")
        os.rename(a, b)
        time.sleep(0.3)  # the interval under test, not a wait for a condition
        os.rename(b, c)
        more = [rec(i, session="big") for i in range(15000, 15010)]
        write(c, more, "a")
        csmd.wait_ready(60)
        sync_now()
        expect(db, {c: lines + more}, lines + more)


class TestSwap:
    def test_two_files_swapped_while_stopped_and_while_watching(self, csmd: Csmd, projects: Path, db: Path
                                                                ) -> None:
        a, b, c = (projects / "p" / f"{n}.jsonl" for n in "abc")
        la, lb, lc = ([rec(i, session=n) for i in range(4)] for n in "abc")
        write(a, la)
        write(b, lb)
        write(c, lc)
        csmd.start()
        ida, idb, idc = (checkpoint(db, p)[0] for p in (a, b, c))
        csmd.stop()
        tmp = projects / "p" / "tmp"
        os.rename(a, tmp)
        os.rename(b, a)
        os.rename(tmp, b)
        csmd.start()
        sync_now()
        expect(db, {a: lb, b: la, c: lc}, la + lb + lc)
        assert (checkpoint(db, a)[:2], checkpoint(db, b)[:2]) == ((idb, 0), (ida, 0))
        swap = projects / "p" / "swap.jsonl"  # now while watching, through a .jsonl name too
        os.rename(a, swap)
        os.rename(c, a)
        os.rename(swap, c)
        wait_for(lambda: path_of(db, idb) == [(str(c), None)] and path_of(db, idc) == [(str(a), None)],
                 what="the checkpoints to follow the swap")
        sync_now()
        expect(db, {a: lc, b: la, c: lb}, la + lb + lc)
        assert db_rows(db, "SELECT count(*) FROM sync_metadata")[0][0] == 3


class TestSessionIdentity:
    """A session is where it lives as well as its id: copies are separate sessions, ids that name
    several are refused with the candidates."""

    def test_same_session_in_two_project_folders(self, csmd: Csmd, projects: Path, db: Path) -> None:
        sid = "4e27c414-a885-46a0-b5c8-d58e1417377d"
        one = projects / "proj-one" / f"{sid}.jsonl"
        lines = [rec(i, session=sid) for i in range(4)]
        write(one, lines)
        shutil.copytree(one.parent, projects / "proj-two")
        two = projects / "proj-two" / one.name
        csmd.start()
        rows = db_rows(db, "SELECT session_id, project, lines FROM sessions ORDER BY project")
        assert rows == [(sid, "proj-one", 4), (sid, "proj-two", 4)]
        for target in (sid, sid[:8]):
            for args in (["export", "--raw", target], ["query", "show", target]):
                r = run_csm(*args)
                assert r.returncode == 4 and r.stdout == "", (args, r)
                assert str(one) in r.stderr and str(two) in r.stderr, r.stderr
        for path in (one, two):
            r = run_csm("export", "--raw", str(path))
            assert r.returncode == 0 and r.stdout == "".join(x + "\n" for x in lines), r.stderr
            r = run_csm("query", "show", str(path), "--json")
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["session"]["project"] == path.parent.name

    def test_same_session_under_both_roots(self, csmd: Csmd, projects: Path, db: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        other = tmp_path / "claude2" / "projects"
        monkeypatch.setenv("CLAUDE_CONFIG_DIR", f"{projects.parent},{other.parent}")
        lines = [rec(i, session="s1") for i in range(4)]
        write(projects / "p" / "s1.jsonl", lines)
        write(other / "p" / "s1.jsonl", lines)
        csmd.start()
        assert db_rows(db, "SELECT session_id, project, lines FROM sessions") == [("s1", "p", 4)] * 2
        r = run_csm("export", "--raw", "s1")
        assert r.returncode == 4 and "ambiguous" in r.stderr and str(other / "p" / "s1.jsonl") in r.stderr, r
        r = run_csm("export", "--raw", str(other / "p" / "s1.jsonl"))
        assert r.returncode == 0 and r.stdout.count("\n") == 4, r

    def test_subagents_with_one_id_under_two_parents(self, csmd: Csmd, projects: Path, db: Path) -> None:
        x = projects / "p" / "s1" / "subagents" / "agent-a1.jsonl"
        y = projects / "p" / "s2" / "subagents" / "agent-a1.jsonl"
        write(projects / "p" / "s1.jsonl", [rec(0, session="s1")])
        write(projects / "p" / "s2.jsonl", [rec(0, session="s2")])
        write(x, [rec(i, session="s1", isSidechain=True) for i in range(3)])
        write(y, [rec(i, session="s2", isSidechain=True) for i in range(10, 13)])
        csmd.start()
        rows = db_rows(db, "SELECT session_id, parent_session_id, lines FROM sessions WHERE is_subagent "
                           "ORDER BY parent_session_id")
        assert rows == [("agent-a1", "s1", 3), ("agent-a1", "s2", 3)]
        r = run_csm("export", "--raw", "a1")
        assert r.returncode == 4 and str(x) in r.stderr and str(y) in r.stderr, r
        shown = json.loads(run_csm("query", "show", "s1", "--json").stdout)
        texts = [e["text"] for e in shown["entries"]]
        assert any("hello 2" in t for t in texts) and not any("hello 12" in t for t in texts), texts

    def test_an_existing_database_migrates(self, csmd: Csmd, projects: Path, db: Path) -> None:
        """A database written before sessions had a place: two copies of s1 summed into one row."""
        import sqlite3

        from csm.daemon import reader
        from csm.daemon.migrations import EARLIER_NAMES, MIGRATIONS

        lines = [rec(i, session="s1") for i in range(4)]
        files = [projects / "p1" / "s1.jsonl", projects / "p2" / "s1.jsonl"]
        db.parent.mkdir(parents=True)
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("CREATE TABLE _csm_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        old = [(name, MIGRATIONS[EARLIER_NAMES[name] - 1][1]) for name in ("m001_initial", "m003_usage", "m004_search")]
        for number, (name, sql) in enumerate(old, 1):
            conn.executescript(f"BEGIN; {sql}; INSERT INTO _csm_migrations VALUES ('{name}', 'then'); "
                               f"PRAGMA user_version = {number}; COMMIT;")
        event = 0
        for file_id, f in enumerate(files, 1):
            write(f, lines)
            st, fd = f.stat(), os.open(f, os.O_RDONLY)
            head_len, head_hash = reader.head(fd, st.st_size)
            conn.execute("INSERT INTO sync_metadata VALUES (?,?,'then','then',?,?,?,'s1',NULL,?,?,?,?,0,?,?,?,NULL)",
                         (str(f), st.st_size, file_id, str(projects), f.parent.name, st.st_dev, st.st_ino, st.st_size,
                          st.st_mtime_ns, head_len, head_hash, reader.tail(fd, st.st_size)))
            os.close(fd)
            offset = 0
            for x in lines:
                event += 1
                conn.execute("INSERT INTO events VALUES (?,?,0,?,'s1',NULL,NULL,'user',NULL,?)",
                             (event, file_id, offset, x))
                offset += len(x) + 1
        conn.execute("INSERT INTO session_stats (session_id, project, lines, messages, first_prompt) "
                     "VALUES ('s1', 'p2', 8, 8, 'hello 0')")
        conn.execute("INSERT INTO session_models VALUES ('s1', 'claude-x')")
        conn.close()
        csmd.start()
        sync_now()
        assert db_rows(db, "SELECT session_id, project, lines, messages, models, file_path FROM sessions "
                           "ORDER BY project") == [("s1", f.parent.name, 4, 4, "claude-x", str(f)) for f in files]
        assert db_rows(db, "SELECT file_id, file_path, gone_at FROM sync_metadata ORDER BY file_id") == [
            (1, str(files[0]), None), (2, str(files[1]), None)]
        assert all_raws(db) == {x: 2 for x in lines}, "nothing read again"
        assert db_rows(db, "PRAGMA user_version") == [(len(MIGRATIONS),)]


class TestRenameChaos:
    @pytest.mark.parametrize("seed", [1, 2])
    def test_renames_appends_and_restarts_at_random(self, csmd: Csmd, projects: Path, db: Path, seed: int) -> None:
        """Files and project folders renamed (in chains faster than csmd, and swapped), lines appended,
        csmd stopped (SIGTERM) or killed (SIGKILL) and restarted, all at random: in the end every line
        of every file is stored exactly once, and each file's current rows are its lines."""
        import random
        import signal

        rnd = random.Random(seed)
        folders = [projects / f"proj{k}" for k in range(3)]
        files: list[Path] = []
        counter = 0

        def lines(tag: int, n: int, pad: int = 0) -> list[str]:
            nonlocal counter
            counter += n
            return [rec(i, session=f"f{tag}", pad=pad) for i in range(counter - n, counter)]

        for k in range(8):
            f = folders[k % 3] / f"s{k}.jsonl"
            write(f, lines(k, rnd.choice([5, 50, 3000]), pad=rnd.choice([0, 100])))
            files.append(f)
        csmd.start()
        names = 100

        def fresh_name(folder: Path) -> Path:
            nonlocal names
            names += 1
            return folder / f"n{names}.jsonl"

        for step in range(70):
            what = rnd.random()
            if what < 0.35:  # append, sometimes a lot (a catch-up for the next renames to race)
                k = rnd.randrange(len(files))
                write(files[k], lines(k, rnd.choice([1, 3, 2000])), "a")
            elif what < 0.6:  # a chain of renames, back to back
                k = rnd.randrange(len(files))
                for _ in range(rnd.randint(1, 3)):
                    dest = fresh_name(rnd.choice(folders))
                    os.rename(files[k], dest)
                    files[k] = dest
            elif what < 0.72:  # swap two files
                i, j = rnd.sample(range(len(files)), 2)
                tmp = files[i].with_name(f"swap{step}" + rnd.choice([".jsonl", ".tmp"]))
                os.rename(files[i], tmp)
                os.rename(files[j], files[i])
                os.rename(tmp, files[j])
                files[i], files[j] = files[j], files[i]  # i's lines are at j's old path now, and j's at i's
            elif what < 0.85:  # a project folder renamed, maybe twice in a row
                src = rnd.choice(folders)
                for _ in range(rnd.randint(1, 2)):
                    dest = projects / f"proj-r{step}-{rnd.randrange(10**6)}"
                    os.rename(src, dest)
                    files = [dest / f.relative_to(src) if f.is_relative_to(src) else f for f in files]
                    folders[folders.index(src)] = dest
                    src = dest
            else:  # csmd stopped or killed; sometimes a change while it is down
                csmd.stop(rnd.choice([signal.SIGTERM, signal.SIGKILL]))
                if rnd.random() < 0.5:
                    k = rnd.randrange(len(files))
                    dest = fresh_name(rnd.choice(folders))
                    os.rename(files[k], dest)
                    files[k] = dest
                csmd.start(wait=rnd.random() < 0.5)
            if rnd.random() < 0.3:
                time.sleep(rnd.uniform(0, 0.3))  # pacing, so events land before, during and after catch-ups
        if csmd.proc is not None:
            csmd.wait_ready(60)
        sync_now()
        everything = [x for f in files for x in file_lines(f)]
        assert len(everything) == len(set(everything)) == counter
        expect(db, {f: file_lines(f) for f in files}, everything)
        assert db_rows(db, "SELECT count(*) FROM sync_metadata WHERE gone_at IS NULL")[0][0] == len(files)


def test_usage_and_search_text_follow_a_renamed_session(csmd: Csmd, projects: Path, db: Path) -> None:
    a = projects / "p" / "s1.jsonl"
    answer = {"type": "assistant", "uuid": "a1", "sessionId": "s1", "timestamp": "2026-11-01T10:00:00.000Z",
              "requestId": "r1", "message": {"id": "m1", "model": "claude-opus-4-6", "role": "assistant",
                                             "content": [{"type": "text", "text": "zebra crossing"}],
                                             "usage": {"input_tokens": 10, "output_tokens": 5}}}
    write(a, [rec(0), json.dumps(answer)])
    csmd.start()
    b = projects / "q" / "s2.jsonl"
    b.parent.mkdir()
    os.rename(a, b)
    wait_for(lambda: db_rows(db, "SELECT session_id FROM sessions") == [("s2",)], what="the session to follow")
    sync_now()
    assert db_rows(db, "SELECT session_id, project, output_tokens FROM usage") == [("s2", "q", 5)]
    assert db_rows(db, "SELECT session_id, project, responses, output_tokens FROM session_usage") == [("s2", "q", 1, 5)]
    assert db_rows(db, "SELECT DISTINCT session_id FROM messages") == [("s2",)]
    hits = json.loads(run_csm("query", "search", "zebra", "--json").stdout)
    assert [(h["session_id"], h["project"]) for h in hits] == [("s2", "q")]

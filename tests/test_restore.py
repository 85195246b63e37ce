"""``csm restore`` (issue 15): a session Claude Code deleted, written back byte for byte where it was,
subagents included, and recognised by csmd as the same file: nothing stored twice."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from csmtest import REAL, Csmd, run_csm, sql, sync_now, wait_for
from test_end_to_end import append, line
from test_final_line import stored_after_syncs

SESSION = "29ccd257-68b1-427f-ae5f-6524b7cb6f20"
PROJECT = "-src-experiments-claude_p"


def originals() -> dict[str, bytes]:
    """The fixture's files by path under the project folder: the session's, then its subagent's."""
    src = REAL / PROJECT
    return {str(p.relative_to(src)): p.read_bytes() for p in sorted(src.rglob("*.jsonl"), key=lambda p: len(p.parts))}


def archived(projects: Path) -> dict[str, int]:
    """csmd's view of the project: row count, and live files, by path."""
    rows = sql("SELECT m.file_path, m.gone_at IS NULL AS live, count(e.id) AS n FROM sync_metadata m "
               "LEFT JOIN events e ON e.file_id = m.file_id GROUP BY m.file_id ORDER BY m.file_path")
    return {f"{Path(r['file_path']).relative_to(projects)}:{'live' if r['live'] else 'gone'}": r["n"] for r in rows}


@pytest.fixture
def deleted(csmd: Csmd, projects: Path) -> tuple[Path, dict[str, int]]:
    """The fixture session archived, then deleted as Claude Code's cleanup does; what csmd held before."""
    shutil.copytree(REAL / PROJECT, projects / PROJECT)
    csmd.start()
    before = archived(projects)
    assert len(before) == 2 and all(k.endswith(":live") for k in before)
    shutil.rmtree(projects / PROJECT)
    wait_for(lambda: sync_now() and all(k.endswith(":gone") for k in archived(projects)), 10, "the files gone")
    assert sql("SELECT file_present FROM sessions WHERE session_id = ?", SESSION) == [{"file_present": 0}]
    return projects / PROJECT, before


def test_restore_writes_the_session_and_its_subagents_back_and_csmd_takes_them_as_the_same_files(
        deleted: tuple[Path, dict[str, int]], projects: Path) -> None:
    folder, before = deleted
    r = run_csm("restore", SESSION[:8], "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [(x["status"], x["path"]) for x in report] == [
        ("restored", str(folder / name)) for name in originals()]
    for name, data in originals().items():
        f = folder / name
        assert f.read_bytes() == data, f"{name} is not byte for byte the file Claude Code wrote"
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert not [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".jsonl")], "a temp file left"
    assert sum(x["lines"] for x in report) == sum(d.count(b"\n") for d in originals().values())
    # csmd reads the files at their gone checkpoints' paths again: the same rows, live again, none doubled.
    wait_for(lambda: sync_now() and archived(projects) == before, 10, "the restored files re-attached")
    assert sql("SELECT file_present FROM sessions WHERE session_id = ?", SESSION) == [{"file_present": 1}]
    # Again: everything is already there, and that is no error.
    again = run_csm("restore", SESSION, "--json")
    assert again.returncode == 0, again.stderr
    assert {x["status"] for x in json.loads(again.stdout)} == {"already there"}


def test_dry_run_writes_nothing_and_a_different_file_is_never_overwritten(
        deleted: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    folder, _ = deleted
    dry = run_csm("restore", SESSION, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would restore") == 2 and not folder.exists()
    # Elsewhere (--to): the subagent keeps its place beside the session; a different file there stays.
    to = tmp_path / "rescued"
    mine = to / f"{SESSION}.jsonl"
    append(mine, b'{"type":"user","note":"my own edit"}\n')
    r = run_csm("restore", SESSION, "--to", str(to))
    assert r.returncode == 73, (r.returncode, r.stdout, r.stderr)
    assert f"{mine}" in r.stderr and "left alone" in r.stderr
    assert mine.read_bytes() == b'{"type":"user","note":"my own edit"}\n'
    agent = to / SESSION / "subagents" / "agent-a2271d1.jsonl"
    assert agent.read_bytes() == originals()[f"{SESSION}/subagents/agent-a2271d1.jsonl"], "the other file is restored"
    assert "differs" in r.stdout and "restored" in r.stdout
    # A symbolic link is never followed, even to the very bytes: it is not the file.
    link = tmp_path / "linked"
    link.mkdir()
    (link / f"{SESSION}.jsonl").symlink_to(agent)
    shutil.copytree(to / SESSION, link / SESSION)
    r = run_csm("restore", SESSION, "--to", str(link), "--json")
    assert r.returncode == 73, (r.returncode, r.stderr)
    assert [x["status"] for x in json.loads(r.stdout)] == ["differs", "already there"]
    # A folder that cannot be made (a file is in the way; tests run as root, so no permission test) is
    # one line, not a traceback.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = run_csm("restore", SESSION, "--to", str(blocker / "x"))
    assert r.returncode == 1 and r.stderr.startswith("csm: cannot write") and "Traceback" not in r.stderr, r.stderr


def test_a_final_line_stored_without_newline_is_restored_without_one(csmd: Csmd, projects: Path, tmp_path: Path,
                                                                     ) -> None:
    cfg = tmp_path / "config" / "csm" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("final_line_after_s = 0.3\n")
    f = projects / "p" / "s1.jsonl"
    append(f, line(0) + line(1).rstrip(b"\n"))
    written = f.read_bytes()
    csmd.start()
    stored_after_syncs(tmp_path / "data" / "csm" / "csm.db", f, 2)
    f.unlink()
    wait_for(lambda: sync_now() and sql("SELECT gone_at FROM sync_metadata")[0]["gone_at"], 10, "the file gone")
    r = run_csm("restore", "s1")
    assert r.returncode == 0, r.stderr
    assert f.read_bytes() == written
    wait_for(lambda: sync_now() and sql("SELECT gone_at FROM sync_metadata")[0]["gone_at"] is None, 10, "present")
    assert sql("SELECT count(*) AS n FROM events") == [{"n": 2}]


def test_an_ambiguous_prefix_is_refused_with_its_candidates(csmd: Csmd, projects: Path) -> None:
    append(projects / "p" / "abc1.jsonl", line(0, session="abc1"))
    append(projects / "p" / "abc2.jsonl", line(0, session="abc2"))
    csmd.start()
    r = run_csm("restore", "abc")
    assert r.returncode == 4 and "abc1" in r.stderr and "abc2" in r.stderr, (r.returncode, r.stderr)
    assert run_csm("restore", "zzz").returncode == 5

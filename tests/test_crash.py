"""Crashes and batching: bounded transactions and memory, and SIGKILL at any moment loses nothing, doubles nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

from csmtest import Csmd, all_raws, current_raws, db_rows, file_lines, status, sync_now, wait_for


def configure(tmp_path: Path, **settings: int) -> None:
    """A config.toml in the test's own config dir (XDG_CONFIG_HOME)."""
    path = tmp_path / "config" / "csm" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))


def lines_for(session: str, start: int, count: int, rng: random.Random) -> list[str]:
    """Transcript-like lines of random length (100 B to ~20 KB), unique except for a few exact repeats."""
    out = []
    for i in range(start, start + count):
        if out and rng.random() < 0.02:
            out.append(out[-1])  # byte-identical lines happen (e.g. re-appended mode lines)
            continue
        obj = {"type": rng.choice(["user", "assistant", "progress", "system"]), "uuid": f"{session}-{i}",
               "sessionId": session, "timestamp": f"2026-11-01T10:00:{i % 60:02d}.000Z",
               "message": {"content": "w" * int(rng.paretovariate(1.2) * 100) if rng.random() < 0.9 else "x" * 20000}}
        out.append(json.dumps(obj, separators=(",", ":")))
    return out


def vm(pid: int, field: str) -> int:
    """A figure from /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_large_file_is_many_transactions_in_bounded_memory(csmd: Csmd, projects: Path, db: Path,
                                                           tmp_path: Path) -> None:
    configure(tmp_path, batch_lines=500, batch_bytes=256 * 1024)
    (projects / "p").mkdir()
    csmd.start()
    assert csmd.proc is not None
    baseline = vm(csmd.proc.pid, "VmHWM")
    rng = random.Random(7)
    staging = tmp_path / "big.jsonl"
    with open(staging, "w") as out:
        n = 0
        while out.tell() < 50 * 1024 * 1024:
            out.write("".join(x + "\n" for x in lines_for("big", n, 1000, rng)))
            n += 1000
    size = staging.stat().st_size
    target = projects / "p" / "big.jsonl"
    os.rename(staging, target)  # appears whole, as a file moved in
    offsets: set[int] = set()

    def done() -> bool:
        rows = db_rows(db, "SELECT last_position FROM sync_metadata WHERE file_path = ?", str(target))
        if rows:
            offsets.add(rows[0][0])
        return bool(rows) and rows[0][0] == size

    wait_for(done, 120, "the 50 MB file to be ingested")
    peak = vm(csmd.proc.pid, "VmHWM")
    assert len(offsets - {0, size}) >= 3, f"the checkpoint moved in several commits, saw only {sorted(offsets)}"
    assert peak - baseline < 40 * 1024 * 1024, f"csmd grew by {(peak - baseline) >> 20} MB reading a 50 MB file"
    assert db_rows(db, "SELECT count(*) FROM events")[0][0] == target.read_bytes().count(b"\n")


def committed_offset(db: Path) -> int:
    """The checkpoint's offset, 0 while csmd has not yet created (or migrated) the database."""
    try:
        return next(iter(db_rows(db, "SELECT last_position FROM sync_metadata")), (0,))[0]
    except sqlite3.OperationalError:  # the file exists a moment before its tables do
        return 0


def test_a_visit_cut_short_is_resumed_by_the_next_rescan(csmd: Csmd, projects: Path, db: Path,
                                                         tmp_path: Path) -> None:
    """Stopped (SIGTERM, then SIGKILL) in the middle of a file that then never changes again."""
    configure(tmp_path, batch_lines=100, batch_bytes=64 * 1024)
    f = projects / "p" / "s1.jsonl"
    f.parent.mkdir()
    f.write_text("".join(x + "\n" for x in lines_for("s1", 0, 10_000, random.Random(3))))
    size = f.stat().st_size
    for sig in (signal.SIGTERM, signal.SIGKILL):
        csmd.start(wait=False)
        offset = wait_for(lambda: committed_offset(db), 30, "a first batch to be committed")
        assert offset < size, "the file was read whole before it could be interrupted: make it bigger"
        csmd.stop(sig)
    csmd.start(wait=False)
    csmd.wait_ready(60)
    sync_now()
    assert current_raws(db, f) == file_lines(f)


def test_sigkill_at_random_moments_loses_and_doubles_nothing(csmd: Csmd, projects: Path, db: Path,
                                                             tmp_path: Path) -> None:
    """25 SIGKILLs during a ~30 MB ingest, with appends, a half-written line and a rewrite between them."""
    seed = int(os.environ.get("CSM_CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    configure(tmp_path, batch_lines=200, batch_bytes=128 * 1024)
    files = {projects / f"p{k % 2}" / f"s{k}.jsonl": f"s{k}" for k in range(6)}
    ever: dict[Path, Counter[str]] = {}
    written: dict[Path, int] = {}
    for path, session in files.items():
        path.parent.mkdir(exist_ok=True)
        lines = lines_for(session, 0, 2500, rng)  # ~5 MB each
        path.write_text("".join(x + "\n" for x in lines))
        ever[path] = Counter(lines)
        written[path] = len(lines)
    kills = 0
    pending: tuple[Path, str] | None = None
    for round_ in range(25):
        csmd.start(wait=False)
        time.sleep(rng.uniform(0.3, 1.2))  # not a synchronisation: the kill lands at a random moment
        assert csmd.alive, csmd.log()
        csmd.stop(signal.SIGKILL)
        kills += 1
        # Between restarts Claude Code goes on writing: it finishes a line left half-written...
        if pending is not None:
            with open(pending[0], "a") as out:
                out.write(pending[1] + "\n")
            pending = None
        # ...appends...
        path = rng.choice(list(files))
        extra = lines_for(files[path], written[path], rng.randint(1, 300), rng)
        written[path] += len(extra)
        ever[path].update(extra)
        with open(path, "a") as out:
            out.write("".join(x + "\n" for x in extra))
        # ...sometimes leaves one half-written when csmd is killed...
        if round_ % 5 == 2:
            half = lines_for(files[path], written[path], 1, rng)[0]
            written[path] += 1
            ever[path].update([half])
            with open(path, "a") as out:
                out.write(half[: len(half) // 2])
            pending = (path, half[len(half) // 2 :])
        # ...and once, a tool rewrites a file: a few lines dropped, a few added.
        if round_ == 14:
            csmd.start(wait=False)  # after csm has read it all: lines dropped before it could are not its to keep
            csmd.wait_ready(120)  # the first scan ingests what is left: slow on a loaded machine
            sync_now()
            csmd.stop(signal.SIGKILL)
            victim = rng.choice(list(files))
            lines = file_lines(victim)
            kept = [x for x in lines if rng.random() > 0.05]
            added = lines_for(files[victim], written[victim], 50, rng)
            written[victim] += len(added)
            tmp = victim.with_suffix(".tmp")
            tmp.write_text("".join(x + "\n" for x in kept + added))
            os.replace(tmp, victim)
            ever[victim] = ever[victim] | Counter(kept + added)  # dropped lines keep their rows
    csmd.start(wait=False)
    csmd.wait_ready(120)
    sync_now()
    assert kills >= 20
    context = f"(seed {seed}; rerun with CSM_CRASH_SEED={seed})"
    for path in files:
        assert current_raws(db, path) == file_lines(path), f"{path} {context}"
    expected = sum(ever.values(), Counter())
    assert all_raws(db) == dict(expected), context
    assert status()["errors"] == 0, context

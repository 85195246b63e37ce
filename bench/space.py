"""Disk space csm takes for a history: database + WAL against the transcripts' own size (issue 14).

    pip install -e . && python bench/space.py --corpus ../shared/fixtures/real [--idle-s 30]
    python bench/space.py --corpus ../shared/fixtures/real --compress       # every session quiet
    python bench/space.py --export-mb 50 --compress                         # export of a compressed session

Copies the corpus into a temporary home, lets a real csmd sync it, and reports the database and
WAL sizes right after the sync and once csmd has been idle (the WAL truncated, free pages given
back), each divided by the transcripts' size; then times ``csm db backup`` of that database
(``--backups`` runs, median) while csmd runs. With ``--compress`` csmd runs with
``compress_after_days = 0`` (every session quiet): the idle figures are then after compression, with
csmd's peak RSS (VmHWM: the sync's included). ``--export-mb N`` adds one session of N MB made of the
corpus's lines (or generated ones) and times ``csm export --raw`` of it (median of 3, checked byte
for byte).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Csmd, Home, Watch, csm, csm_cmd, pct, wait_scanned  # noqa: E402


def size(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


def tree_bytes(top: Path) -> int:
    return sum(p.stat().st_size for p in top.rglob("*.jsonl") if p.is_file() and not p.is_symlink())


def sizes(home: Home) -> dict[str, float]:
    db, wal = size(home.db), size(Path(f"{home.db}-wal"))
    return {"db_mb": round(db / 2**20, 1), "wal_mb": round(wal / 2**20, 1), "bytes": db + wal}


def plain(home: Home) -> int:
    """Rows not compressed yet (read-only, beside csmd)."""
    conn = sqlite3.connect(f"file:{home.db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM events WHERE zraw IS NULL").fetchone()[0]
    finally:
        conn.close()


def shares(db: Path) -> dict[str, float]:
    """MB of the file each table and index holds (SQLite's ``dbstat``; FTS5's shadow tables by name),
    biggest first, those under 0.1 MB left out."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    finally:
        conn.close()
    return {name: round(b / 2**20, 1) for name, b in rows if b >= 2**20 / 10}


def first_scan_done(home: Home, d: Csmd, timeout: float = 600.0) -> None:
    """Until csmd's first scan has ended (``last_sync_at``; its state stays "initial sync" through the idle work
    after it, compression included, which is what ``wait_scanned`` waits for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d.check()
        r = subprocess.run([*csm_cmd(), "status", "--json"], env=home.env, capture_output=True, text=True)
        if r.returncode == 0 and json.loads(r.stdout).get("last_sync_at"):
            return
        time.sleep(0.05)
    raise SystemExit("csmd did not finish its first scan in time")


def fresh(home: Home, n: int) -> dict[str, float]:
    """Append ``n`` lines one at a time to a live session (every 10-30 ms) and time each until csmd has stored
    it, while csmd compresses (just restarted with every session quiet): freshness with compression running."""
    live = home.projects / "live" / "live-session.jsonl"
    w = Watch(home.db)
    ms: list[float] = []
    try:
        for i in range(n):
            line = json.dumps({"type": "user", "sessionId": "live-session", "uuid": f"live-{i}",
                               "timestamp": "2026-12-02T00:00:00Z",
                               "message": {"role": "user", "content": f"live line {i} " + "words " * 50}})
            target = w.max_id() + 1
            with open(live, "ab") as out:
                out.write(line.encode() + b"\n")
            t0 = time.perf_counter()
            done = w.wait_id(target, timeout=30.0)
            if done is None:
                raise SystemExit(f"append {i} was not stored within 30 s")
            ms.append((done - t0) * 1000)
            time.sleep(0.01 + 0.02 * (i % 3) / 2)
    finally:
        w.close()
    return {"n": n, "p50_ms": round(pct(ms, 0.5), 1), "p99_ms": round(pct(ms, 0.99), 1), "max_ms": round(max(ms), 1)}


def write_session(path: Path, mb: float, corpus: Path) -> None:
    """One session of ``mb`` MB: the corpus's lines over and over (real text), else generated ones."""
    lines = [x for p in sorted(corpus.rglob("*.jsonl")) for x in p.read_bytes().split(b"\n") if x.startswith(b"{")]
    if not lines:
        lines = [json.dumps({"type": "user", "sessionId": "big-session", "uuid": f"u{i}",
                             "message": {"role": "user", "content": f"line {i} " + "words " * 300}}).encode()
                 for i in range(1000)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        written, i = 0, 0
        while written < mb * 2**20:
            line = lines[i % len(lines)] + b"\n"
            out.write(line)
            written += len(line)
            i += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, help="a folder of transcripts (the real fixtures)")
    ap.add_argument("--compress", action="store_true", help="compress_after_days = 0: every session quiet")
    ap.add_argument("--export-mb", type=float, default=0, help="time csm export --raw of a session this big")
    ap.add_argument("--idle-s", type=float, default=30.0, help="how long to wait for the idle work at most")
    ap.add_argument("--backups", type=int, default=3, help="csm db backup runs to take the median of")
    ap.add_argument("--fresh", type=int, default=0, help="time this many appends to a live session right after "
                    "the sync, while csmd compresses (with --compress)")
    ap.add_argument("--keep", type=Path, help="copy the idle database here (for a closer look)")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="csm-space-"))
    home = Home(base, "h")
    try:
        if args.corpus:
            shutil.copytree(args.corpus, home.projects, dirs_exist_ok=True, symlinks=True)
        big = home.projects / "big" / "big-session.jsonl"
        if args.export_mb:
            write_session(big, args.export_mb, home.projects)
        if args.fresh:  # the live session exists before csmd starts: its first append is no new folder
            (home.projects / "live").mkdir()
            (home.projects / "live" / "live-session.jsonl").write_bytes(b"")
        transcripts = tree_bytes(home.projects)
        if args.compress:
            cfg = home.dir / "config" / "csm" / "config.toml"
            cfg.parent.mkdir(parents=True)
            # With --fresh the sync runs with nothing quiet yet; csmd is then restarted with every session quiet.
            cfg.write_text(f"compress_after_days = {1000 if args.fresh else 0}\n")
        d = Csmd(home).start()
        try:
            wait_scanned(home, d, timeout=3600)  # 1 GB on a loaded machine: more than the default 10 min
            csm(home, "sync", "--now")
            synced = sizes(home)
            fresh_ms = {}
            if args.fresh:
                assert d.proc is not None
                d.proc.terminate()
                d.proc.wait(30)
                cfg.write_text("compress_after_days = 0\n")
                d = Csmd(home).start()
                first_scan_done(home, d)  # compression under way
                left = plain(home)
                fresh_ms = fresh(home, args.fresh)
                fresh_ms["plain_rows_before_after"] = [left, plain(home)]
            deadline = time.monotonic() + args.idle_s
            while time.monotonic() < deadline and (size(Path(f"{home.db}-wal")) or args.compress and plain(home)):
                time.sleep(0.2)
            idle = sizes(home)
            if args.fresh:  # the same appends with nothing left to compress, under the same load: the baseline
                fresh_ms["idle"] = fresh(home, args.fresh)
            rss_peak = d.peak_rss_mb()
            export_s = []
            if args.export_mb:
                for _ in range(3):
                    t = time.perf_counter()
                    r = subprocess.run([*csm_cmd(), "export", "--raw", str(big)], env=home.env, capture_output=True,
                                       timeout=600)
                    export_s.append(time.perf_counter() - t)
                    if r.returncode or r.stdout != big.read_bytes():
                        raise SystemExit(f"export of {big} is not byte-identical: {r.stderr.decode()[-500:]}")
            backup_s = []
            for i in range(args.backups):
                backup_s.append(csm(home, "db", "backup", str(base / f"backup-{i}.db"))[0])
        finally:
            assert d.proc is not None
            d.proc.terminate()
            d.proc.wait(30)
        out = {
            "transcripts_mb": round(transcripts / 2**20, 1),
            **{when: {**s, "ratio": round(s["bytes"] / transcripts, 2)} for when, s in
               (("after_sync", synced), ("idle", idle))},
        }
        if fresh_ms:
            out["fresh_while_compressing"] = fresh_ms
        out["tables_mb"] = shares(home.db)
        if args.keep:
            shutil.copyfile(home.db, args.keep)
        if args.compress:
            out["rss_peak_mb"] = round(rss_peak, 1)
            out["rows_left_plain"] = plain(home)
        if export_s:
            out["export_mb"] = round(big.stat().st_size / 2**20, 1)
            out["export_s_median"] = round(statistics.median(export_s), 3)
            out["export_mb_per_s"] = round(out["export_mb"] / statistics.median(export_s), 1)
        if backup_s:
            out["backup_s_median"] = round(statistics.median(backup_s), 3)
            out["backup_mb_per_s"] = round(idle["bytes"] / 2**20 / statistics.median(backup_s), 1)
        print(json.dumps(out, indent=2))
    finally:
        home.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

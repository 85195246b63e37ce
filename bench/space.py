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
from run import Csmd, Home, csm, csm_cmd, wait_scanned  # noqa: E402


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
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="csm-space-"))
    home = Home(base, "h")
    try:
        if args.corpus:
            shutil.copytree(args.corpus, home.projects, dirs_exist_ok=True, symlinks=True)
        big = home.projects / "big" / "big-session.jsonl"
        if args.export_mb:
            write_session(big, args.export_mb, home.projects)
        transcripts = tree_bytes(home.projects)
        if args.compress:
            cfg = home.dir / "config" / "csm" / "config.toml"
            cfg.parent.mkdir(parents=True)
            cfg.write_text("compress_after_days = 0\n")
        d = Csmd(home).start()
        try:
            wait_scanned(home, d)
            csm(home, "sync", "--now")
            synced = sizes(home)
            deadline = time.monotonic() + args.idle_s
            while time.monotonic() < deadline and (size(Path(f"{home.db}-wal")) or args.compress and plain(home)):
                time.sleep(0.2)
            idle = sizes(home)
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

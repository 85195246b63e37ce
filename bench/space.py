"""Disk space csm takes for a history: database + WAL against the transcripts' own size (issue 14).

    pip install -e . && python bench/space.py --corpus ../shared/fixtures/real [--idle-s 30]

Copies the corpus into a temporary home, lets a real csmd sync it, and reports the database and
WAL sizes right after the sync and once csmd has been idle (the WAL truncated, free pages given
back), each divided by the transcripts' size; then times ``csm db backup`` of that database
(``--backups`` runs, median) while csmd runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Csmd, Home, csm, wait_scanned  # noqa: E402


def size(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


def tree_bytes(top: Path) -> int:
    return sum(p.stat().st_size for p in top.rglob("*.jsonl") if p.is_file() and not p.is_symlink())


def sizes(home: Home) -> dict[str, float]:
    db, wal = size(home.db), size(Path(f"{home.db}-wal"))
    return {"db_mb": round(db / 2**20, 1), "wal_mb": round(wal / 2**20, 1), "bytes": db + wal}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True, help="a folder of transcripts (the real fixtures)")
    ap.add_argument("--idle-s", type=float, default=30.0, help="how long to wait for the idle work at most")
    ap.add_argument("--backups", type=int, default=3, help="csm db backup runs to take the median of")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="csm-space-"))
    home = Home(base, "h")
    try:
        shutil.copytree(args.corpus, home.projects, dirs_exist_ok=True, symlinks=True)
        transcripts = tree_bytes(home.projects)
        d = Csmd(home).start()
        try:
            wait_scanned(home, d)
            csm(home, "sync", "--now")
            synced = sizes(home)
            deadline = time.monotonic() + args.idle_s
            while time.monotonic() < deadline and size(Path(f"{home.db}-wal")):
                time.sleep(0.2)
            idle = sizes(home)
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

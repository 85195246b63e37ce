"""Team mode: how fast csmd's mirror fills a local PostgreSQL, and csmd's memory meanwhile.

A generated corpus is archived first without ``[team]``; then csmd restarts with ``share =
transcripts`` and the mirror sends the whole history alone (the worst case: a member joining with
a long history). Rows are PostgreSQL rows (lines + messages + usage + sessions). The cluster is a
throwaway one (tests/pgcluster.py: fsync off, a unix socket), so the figures are csmd's side.

    python bench/team.py --size-mb 100
    python bench/team.py --size-mb 100 --control-s 36 --breakdown /tmp/b.jsonl [--tracemalloc]

``--breakdown`` runs the mirroring csmd under ``bench/probe.py`` (SQLite's heap, glibc's, Python's blocks
every 0.2 s into the file) and prints where its RSS was at the peak (``bench/smaps.py``: each library,
the main heap, glibc's per-thread arenas); ``--tracemalloc`` adds Python's blocks by file (and their cost).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from corpus import write_corpus  # noqa: E402
from pgcluster import Cluster  # noqa: E402
from soak import rss_mb  # noqa: E402
import smaps  # noqa: E402


def hwm_mb(pid: int) -> float:
    """The process's peak RSS so far (``VmHWM``): a short peak between two samples counts too."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """The process's CPU seconds so far, user and system (``/proc/<pid>/stat``): what load does not move."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=100)
    ap.add_argument("--control-s", type=float, default=30, help="how long to sample csmd restarted without [team]")
    ap.add_argument("--breakdown", type=Path, help="run the mirroring csmd under bench/probe.py, logging here")
    ap.add_argument("--tracemalloc", action="store_true", help="with --breakdown: Python's blocks by file too")
    args = ap.parse_args()

    import psycopg

    from csm.team import schema

    work = Path(tempfile.mkdtemp(prefix="csm-team-bench-"))
    run = Path(tempfile.mkdtemp(prefix="csm-", dir="/tmp"))
    run.chmod(0o700)
    projects = work / "claude" / "projects"
    write_corpus(projects, args.size_mb)
    env = {**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work / "data"),
           "XDG_CONFIG_HOME": str(work / "config"), "XDG_RUNTIME_DIR": str(run), "CLAUDE_CONFIG_DIR": str(work / "claude")}
    db = work / "data" / "csm" / "csm.db"
    cluster = Cluster()
    cluster.start()
    try:
        cluster.create_db()
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            schema.migrate(conn)
            schema.add_member(conn, "bench")

        def csmd(probe: bool = False) -> subprocess.Popen[bytes]:
            if probe and args.breakdown:
                penv = dict(env, PROBE_OUT=str(args.breakdown), **({"PROBE_TRACEMALLOC": "1"} if args.tracemalloc else {}))
                return subprocess.Popen([sys.executable, str(HERE / "probe.py")], env=penv,
                                        stderr=open(work / "csmd.log", "ab"))
            return subprocess.Popen([sys.executable, "-m", "csm.daemon"], env=env, stderr=open(work / "csmd.log", "ab"))

        def csm(*a: str) -> dict:  # type: ignore[type-arg]
            r = subprocess.run([sys.executable, "-m", "csm.client", *a, "--json"], env=env, capture_output=True,
                               text=True)
            return json.loads(r.stdout) if r.returncode == 0 else {}

        p = csmd()
        local_peak = 0.0
        while not csm("status").get("last_sync_at"):
            local_peak = max(local_peak, rss_mb(p.pid))
            time.sleep(0.2)
        local_peak = max(local_peak, hwm_mb(p.pid))
        p.terminate()
        p.wait()
        # Control: the same restart without [team] (a restart finishes work the first run left, such as
        # indexing tool text for search), sampled as long as the mirror will take, at most 60 s.
        p = csmd()
        control_peak, t0 = 0.0, time.monotonic()
        while time.monotonic() - t0 < args.control_s:
            control_peak = max(control_peak, rss_mb(p.pid))
            time.sleep(0.1)
        control_peak = max(control_peak, hwm_mb(p.pid))
        p.terminate()
        p.wait()
        events = sqlite3.connect(db).execute("SELECT count(*), sum(length(raw)) FROM events").fetchone()

        cfg = work / "config" / "csm" / "config.toml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(f'[team]\ndsn = "{cluster.dsn(user="bench")}"\nmember = "bench"\nshare = "transcripts"\n')
        p = csmd(probe=True)
        t0 = time.monotonic()
        peak, at_peak = 0.0, {}
        while True:
            rss = rss_mb(p.pid)
            if rss > peak and args.breakdown:
                at_peak = smaps.summary(smaps.read(p.pid))
            peak = max(peak, rss)
            s = csm("team", "status")
            if s.get("head") and s["position"] == s["head"]:
                break
            time.sleep(0.1)
        seconds = time.monotonic() - t0
        peak = max(peak, rss_mb(p.pid), hwm_mb(p.pid))
        cpu = cpu_s(p.pid)
        p.terminate()
        p.wait()
        with psycopg.connect(cluster.dsn()) as conn:
            rows = sum(conn.execute(f"SELECT count(*) FROM csm.{t}").fetchone()[0]  # type: ignore[index]
                       for t in schema.DATA_TABLES)
            size = conn.execute("SELECT pg_database_size('csm')").fetchone()[0]  # type: ignore[index]
        mb = events[1] / 1e6
        print(json.dumps({
            "corpus_mb": args.size_mb, "lines": events[0], "line_mb": round(mb, 1), "pg_rows": rows,
            "seconds": round(seconds, 1), "csmd_cpu_s": round(cpu, 2), "rows_per_s": round(rows / seconds), "line_mb_per_s": round(mb / seconds, 1),
            "gb_history_s": round(seconds * 1000 / mb), "pg_db_mb": round(size / 1e6), "csmd_peak_rss_mb": round(peak, 1),
            "csmd_peak_rss_mb_archiving_alone": round(local_peak, 1),
            "csmd_peak_rss_mb_restart_without_team": round(control_peak, 1),
        }))
        if at_peak:
            print("at the peak, resident MB:")
            for k, v in sorted(at_peak.items(), key=lambda kv: -kv[1]):
                if v >= 0.1:
                    print(f"{v:8.2f}  {k}")
    finally:
        cluster.destroy()
        subprocess.run(["rm", "-rf", str(work), str(run)])


if __name__ == "__main__":
    main()

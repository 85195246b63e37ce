"""The csm benchmark: a real csmd in a temporary home, measured from the outside.

    pip install -e . && python bench/run.py [--size 100] [--repeat 3] [--quick] [--json]

Phases (``--only`` picks some):

- ``sync``: initial sync of a ``--size`` MB corpus (``bench/corpus.py``): wall seconds from
  starting csmd to the last row committed, MB/s, and csmd's peak RSS (``VmHWM``). Each repeat
  starts a fresh database on the same corpus (hot page cache); the median is reported.
- ``rtt``: ``csm status`` and ``csm query sql`` round trips (real CLI subprocesses, median).
- ``fresh``: 200 appends of one line each to live files (one in ten into a new file, some in
  new project folders); the time from ``write`` returning to the row being visible to a
  read-only SQLite connection that polls ``PRAGMA data_version`` every 0.2 ms.
- ``idle``: csmd's CPU time (``/proc/<pid>/stat``, all threads) over 60 s with nothing to do
  (10 s with ``--quick``), periodic rescan included.
- ``queries``: ``csm query usage --by day``, ``csm query sessions`` and ``csm query search``
  from the shell (CLI subprocesses, median of ``--repeat`` x 3) and the same requests sent from
  this process (the daemon's part: socket and work, no start-up), once csmd has also indexed the
  tool text it defers during an initial sync. Run it on the 1 GB corpus with
  ``--corpus DIR --only sync,queries``.
- ``backlog``: freshness while an initial sync of ``--corpus`` runs: a live session in a second
  root appended to every 5-30 ms until the sync ends, each line's time to its row (p50, p99, max).
- ``rescan``: a second csmd on 10,000 small files; once they are in, ``csm sync --now`` on
  unchanged files (the daemon's own timing and the CLI's wall time).

Isolation and the csmd launcher are the tests' (``tests/csmtest.py``): HOME, XDG_* and
CLAUDE_CONFIG_DIR point into a temp folder, and the socket into a short one under /tmp, so the real
home is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import csmtest  # noqa: E402
from corpus import LineMaker, Session, write_corpus  # noqa: E402
from csmtest import isolated_env  # noqa: E402

TARGETS = {
    "sync_wall_s": ("<=", 1.0, "100 MB"),
    "sync_rss_mb": ("<=", 50.0, ""),
    "fresh_p50_ms": ("<=", 20.0, ""),
    "fresh_p99_ms": ("<=", 50.0, ""),
    "backlog_fresh_p99_ms": ("<=", 50.0, ""),
    "idle_cpu_pct": ("<=", 0.1, ""),
    "rescan_s": ("<=", 1.0, ""),
    "status_ms": ("<=", 150.0, ""),
    "q_usage_ms": ("<=", 150.0, ""),
    "q_sessions_ms": ("<=", 150.0, ""),
    "q_search_ms": ("<=", 150.0, ""),
    "q_usage_inproc_ms": ("<=", 20.0, ""),
    "q_sessions_inproc_ms": ("<=", 20.0, ""),
    "q_search_inproc_ms": ("<=", 20.0, ""),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Home:
    """A private HOME/XDG/Claude config tree: the tests' isolated environment (``csmtest.isolated_env``)."""

    def __init__(self, base: Path, name: str) -> None:
        self.dir = base / name
        self.projects = self.dir / "claude" / "projects"
        self.projects.mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"} | isolated_env(self.dir)
        self.run = Path(self.env["XDG_RUNTIME_DIR"])
        self.db = self.dir / "data" / "csm" / "csm.db"

    def fresh_data(self) -> None:
        shutil.rmtree(self.dir / "data", ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.run, ignore_errors=True)


class Csmd(csmtest.Csmd):
    """The tests' csmd launcher, started without waiting (the bench times the start), and measured."""

    def __init__(self, home: Home) -> None:
        super().__init__(home.dir, env=home.env)
        self.home = home
        self.started = 0.0

    def start(self, wait: bool = False, extra: list[str] | None = None) -> Csmd:
        self.started = time.perf_counter()
        super().start(wait, extra)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(f"csmd exited with {self.proc.returncode}; log: {self.log_path}\n" + self.log()[-3000:])

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def cpu_ns(self) -> int:
        """CPU time of the live threads in ns (schedstat), finer than ``cpu_s``'s 10 ms ticks."""
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that ended meanwhile
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        try:
            return super().stop(sig, timeout)
        except subprocess.TimeoutExpired:
            return super().stop(signal.SIGKILL, timeout)


class Watch:
    """A read-only connection that notices each commit of the writer at once."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        self.version = -1

    def max_id(self) -> int:
        return self.conn.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone()[0]

    def wait_id(self, target: int, timeout: float, poll_s: float = 0.0002) -> float | None:
        """perf_counter() when max(id) first reached ``target``, or None after ``timeout``."""
        deadline = time.perf_counter() + timeout
        while True:
            v = self.conn.execute("PRAGMA data_version").fetchone()[0]
            if v != self.version:
                self.version = v
                if self.max_id() >= target:
                    return time.perf_counter()
            if time.perf_counter() > deadline:
                return None
            time.sleep(poll_s)

    def close(self) -> None:
        self.conn.close()


def wait_db(d: Csmd, timeout: float = 30.0) -> Watch:
    deadline = time.perf_counter() + timeout
    while True:
        d.check()
        if d.home.db.exists():
            try:
                w = Watch(d.home.db)
                w.max_id()
                return w
            except sqlite3.Error:
                pass
        if time.perf_counter() > deadline:
            raise SystemExit("csmd did not create its database in time")
        time.sleep(0.002)


def csm_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("csm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "csm.client"]


def csm(home: Home, *args: str) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run([*csm_cmd(), *args], env=home.env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"csm {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return wall, r.stdout


def wait_scanned(home: Home, d: Csmd, timeout: float = 600.0) -> None:
    """Until csmd has finished its first scan (so a later rescan finds nothing to do)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        d.check()
        r = subprocess.run([*csm_cmd(), "status", "--json"], env=home.env, capture_output=True, text=True)
        if r.returncode == 0 and json.loads(r.stdout).get("state") == "watching":
            return
        time.sleep(0.05)
    raise SystemExit("csmd did not finish its first scan in time")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


@dataclass
class Ctx:
    args: argparse.Namespace
    base: Path
    out: dict[str, Any]
    say: Callable[[str], None]


# --- phases ---------------------------------------------------------------------------


def phase_sync(c: Ctx, home: Home, corpus_lines: int, corpus_bytes: int) -> Csmd:
    walls, starts, rss, cpus = [], [], [], []
    d = None
    for i in range(c.args.repeat):
        if d is not None:
            d.stop()
        home.fresh_data()
        d = Csmd(home).start()
        w = wait_db(d)
        t_db = time.perf_counter()
        done = w.wait_id(corpus_lines, timeout=c.args.timeout_s)
        if done is None:
            d.check()
            rows = w.max_id()
            d.stop()  # not returned to main's cleanup
            raise SystemExit(f"initial sync did not finish in {c.args.timeout_s:g} s ({rows} of {corpus_lines} rows)")
        walls.append(done - d.started)
        starts.append(t_db - d.started)
        rss.append(d.peak_rss_mb())
        cpus.append(d.cpu_s())
        w.close()
        c.say(f"  sync run {i + 1}: {walls[-1]:.2f} s (database open after {starts[-1]:.2f} s), "
              f"peak RSS {rss[-1]:.1f} MB, CPU {cpus[-1]:.2f} s")
    assert d is not None
    c.out["sync_runs_s"] = [round(x, 3) for x in walls]
    c.out["sync_wall_s"] = round(median(walls), 3)
    c.out["sync_startup_s"] = round(median(starts), 3)
    c.out["sync_mb_per_s"] = round(corpus_bytes / 1e6 / median(walls), 1)
    c.out["sync_cpu_s"] = round(median(cpus), 2)
    c.out["sync_rss_mb"] = round(median(rss), 1)
    c.out["sync_rss_max_mb"] = round(max(rss), 1)
    return d


def db_size(c: Ctx, home: Home, corpus_bytes: int) -> None:
    """After csmd stopped: fold what is left of the WAL into the database, then weigh it."""
    conn = sqlite3.connect(home.db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        free = conn.execute("PRAGMA freelist_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    c.out["db_bytes"] = home.db.stat().st_size
    c.out["db_free_bytes"] = free
    c.out["db_over_corpus"] = round(c.out["db_bytes"] / corpus_bytes, 3)


def phase_rtt(c: Ctx, home: Home, d: Csmd) -> None:
    wait_scanned(home, d)
    n = c.args.rtt_n
    status = [csm(home, "status")[0] for _ in range(n)]
    q = "SELECT project, sessions, last_activity FROM projects ORDER BY last_activity DESC LIMIT 10"
    query = [csm(home, "query", "sql", q)[0] for _ in range(n)]
    c.out["status_ms"] = round(median(status) * 1000, 1)
    c.out["status_inproc_ms"] = round(median(inproc_status(home, n)) * 1000, 2)
    c.out["query_ms"] = round(median(query) * 1000, 1)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    c.out["python_startup_ms"] = round((time.perf_counter() - t) * 1000, 1)


def inproc_status(home: Home, n: int) -> list[float]:
    """The same Status request from this process: the daemon's part of the round trip."""
    from csm.client.transport import request
    from csm.shared import protocol

    sock = Path(home.env["XDG_RUNTIME_DIR"]) / "csm" / "csmd.sock"
    out = []
    for _ in range(n):
        t = time.perf_counter()
        request(protocol.Status(), sock=sock)
        out.append(time.perf_counter() - t)
    return out


QUERIES = {
    "usage": (["query", "usage", "--by", "day"], lambda p: p.UsageReport(by="day")),
    "sessions": (["query", "sessions"], lambda p: p.Sessions()),
    "search": (["query", "search", "error"], lambda p: p.Search(text="error")),
}


def pending_sql(conn: sqlite3.Connection, tables: tuple[str, ...] = ("search_tools_pending", "search_text_pending")
                ) -> str:
    """How many lines search has still to index, in those of ``tables`` that exist (an older csm has no
    ``search_text_pending``: it indexed the prose with the rows)."""
    have = [t for t in tables if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (t,)).fetchone()]
    return "SELECT " + (" + ".join(f"(SELECT count(*) FROM {t})" for t in have) or "0")


def wait_tools_indexed(home: Home, d: Csmd, timeout: float = 1200.0, prose: bool = False) -> float:
    """Until csmd has indexed the search text it deferred during the initial sync (with ``prose``: only the
    prose); seconds waited."""
    conn = sqlite3.connect(f"file:{home.db}?mode=ro", uri=True)
    t = time.perf_counter()
    try:
        query = pending_sql(conn, ("search_text_pending",) if prose else ("search_tools_pending", "search_text_pending"))
        while conn.execute(query).fetchone()[0]:
            d.check()
            if time.perf_counter() - t > timeout:
                raise SystemExit("csmd did not index the deferred tool text in time")
            time.sleep(0.2)
    finally:
        conn.close()
    return time.perf_counter() - t


def phase_queries(c: Ctx, home: Home, d: Csmd) -> None:
    from csm.client.transport import request
    from csm.shared import protocol

    cpu = d.cpu_s()
    c.out["prose_indexed_after_s"] = round(wait_tools_indexed(home, d, prose=True), 2)
    c.out["tools_indexed_after_s"] = round(c.out["prose_indexed_after_s"] + wait_tools_indexed(home, d), 1)
    c.out["tools_indexed_cpu_s"] = round(d.cpu_s() - cpu, 2)
    wait_scanned(home, d)
    sock = Path(home.env["XDG_RUNTIME_DIR"]) / "csm" / "csmd.sock"
    n = c.args.repeat * 3
    for name, (args, make) in QUERIES.items():
        shell = [csm(home, *args)[0] for _ in range(n)]
        inproc = []
        for _ in range(n):
            t = time.perf_counter()
            request(make(protocol), sock=sock, timeout_s=30.0)
            inproc.append(time.perf_counter() - t)
        c.out[f"q_{name}_ms"] = round(median(shell) * 1000, 1)
        c.out[f"q_{name}_inproc_ms"] = round(median(inproc) * 1000, 2)
        c.say(f"  csm {' '.join(args)}: {c.out[f'q_{name}_ms']} ms from the shell, "
              f"{c.out[f'q_{name}_inproc_ms']} ms from this process")


def phase_fresh(c: Ctx, home: Home, d: Csmd, files: list[Path]) -> None:
    wait_scanned(home, d)
    mk = LineMaker(c.args.seed + 1)
    rng = mk.rng
    live = [p for p in files if "subagents" not in p.parts][:20]
    sessions = {p: Session(project=p.parent.name, session_id=p.stem, cwd="/home/user/x", branch="main",
                           model="claude-opus-4-6", t=time.time()) for p in live}
    w = Watch(home.db)
    latencies: list[float] = []
    timeouts = 0
    for i in range(c.args.appends):
        if i % 10 == 9:  # a new file; every third of those in a new project folder
            project = home.projects / (f"-home-user-new-{i}" if i % 30 == 29 else live[i % len(live)].parent.name)
            path = project / f"{mk.uuid()}.jsonl"
            project.mkdir(parents=True, exist_ok=True)
            sessions[path] = Session(project=project.name, session_id=path.stem, cwd="/home/user/x", branch="main",
                                     model="claude-opus-4-6", t=time.time())
            live.append(path)
        else:
            path = rng.choice(live)
        s = sessions[path]
        line = (mk.progress(s) if rng.random() < 0.6 else mk.tool_result(s)) + "\n"
        target = w.max_id() + 1
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            t0 = time.perf_counter()
        finally:
            os.close(fd)
        done = w.wait_id(target, timeout=5.0)
        if done is None:
            timeouts += 1
            d.check()
            w.wait_id(target, timeout=30.0)
        else:
            latencies.append(done - t0)
        time.sleep(rng.uniform(0.005, 0.03))
    w.close()
    ms = [x * 1000 for x in latencies]
    c.out["fresh_n"] = len(ms)
    c.out["fresh_timeouts"] = timeouts
    c.out["fresh_p50_ms"] = round(pct(ms, 0.5), 2)
    c.out["fresh_p99_ms"] = round(pct(ms, 0.99), 2)
    c.out["fresh_max_ms"] = round(max(ms), 2) if ms else None


def phase_backlog(c: Ctx, corpus: Path, corpus_lines: int) -> None:
    """Freshness while an initial sync reads ``corpus``: a live session in a second root is appended
    to every 5-30 ms from the first row until the sync ends; each line's time from ``write`` to its
    row being visible (the rows of the live file are counted through its ``file_id``)."""
    home = Home(c.base, "backlog")
    live_root = home.dir / "live"
    live = live_root / "-home-user-live" / "s-live.jsonl"
    live.parent.mkdir(parents=True)
    mk = LineMaker(c.args.seed + 2)
    s = Session(project=live.parent.name, session_id=live.stem, cwd="/home/user/live", branch="main",
                model="claude-opus-4-6", t=time.time())
    live.write_text(mk.progress(s) + "\n")
    cfg = home.dir / "config" / "csm" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"roots = {json.dumps([str(corpus.resolve()), str(live_root)])}\n"
                   + "".join(f"{x}\n" for x in c.args.setting))
    d = Csmd(home).start()
    try:
        w = wait_db(d)
        while w.max_id() == 0:
            d.check()
            time.sleep(0.005)
        file_id = None
        stored = 1
        latencies: list[float] = []
        while w.max_id() < corpus_lines + stored:
            with open(live, "a") as out:
                out.write(mk.progress(s) + "\n")
                out.flush()
                t0 = time.perf_counter()
            stored += 1
            deadline = t0 + 120
            while True:
                if w.conn.execute("PRAGMA data_version").fetchone()[0] != w.version:
                    w.version = w.conn.execute("PRAGMA data_version").fetchone()[0]
                    if file_id is None:
                        row = w.conn.execute("SELECT file_id FROM sync_metadata WHERE file_path = ?",
                                             (str(live),)).fetchone()
                        file_id = row[0] if row else None
                    if file_id is not None and w.conn.execute(
                            "SELECT count(*) FROM events WHERE file_id = ?", (file_id,)).fetchone()[0] >= stored:
                        latencies.append(time.perf_counter() - t0)
                        break
                if time.perf_counter() > deadline:
                    raise SystemExit("a live line was not stored within 120 s")
                time.sleep(0.0002)
            time.sleep(mk.rng.uniform(0.005, 0.03))
        sync_s = time.perf_counter() - d.started
        w.close()
    finally:
        d.stop()
        home.cleanup()
    ms = [x * 1000 for x in latencies]
    c.out["backlog_sync_s"] = round(sync_s, 2)
    c.out["backlog_fresh_n"] = len(ms)
    c.out["backlog_fresh_p50_ms"] = round(pct(ms, 0.5), 2)
    c.out["backlog_fresh_p99_ms"] = round(pct(ms, 0.99), 2)
    c.out["backlog_fresh_max_ms"] = round(max(ms), 2) if ms else None
    c.say(f"  freshness during the sync: {len(ms)} lines, p50 {c.out['backlog_fresh_p50_ms']} ms, "
          f"p99 {c.out['backlog_fresh_p99_ms']} ms, max {c.out['backlog_fresh_max_ms']} ms")


def phase_idle(c: Ctx, home: Home, d: Csmd) -> None:
    wait_scanned(home, d)
    time.sleep(1.0)
    t, cpu = time.perf_counter(), d.cpu_ns()
    time.sleep(c.args.idle_s)
    used = (d.cpu_ns() - cpu) / 1e9
    c.out["idle_s"] = round(time.perf_counter() - t, 1)
    c.out["idle_cpu_pct"] = round(used / (time.perf_counter() - t) * 100, 4)


def small_files(root: Path, n: int, seed: int) -> tuple[int, int]:
    """``n`` small session files (a few lines each) in n/100 projects: the rescan's haystack."""
    mk = LineMaker(seed)
    lines = size = 0
    for i in range(n):
        project = root / f"-home-user-many-{i // 100}"
        project.mkdir(exist_ok=True)
        s = Session(project=project.name, session_id=mk.uuid(), cwd="/home/user/many", branch="main",
                    model="claude-opus-4-6", t=1_790_000_000.0 + i)
        out = [mk.progress(s) for _ in range(3)]
        data = ("\n".join(out) + "\n").encode()
        (project / f"{s.session_id}.jsonl").write_bytes(data)
        lines += len(out)
        size += len(data)
    return lines, size


def phase_rescan(c: Ctx) -> None:
    home = Home(c.base, "rescan")
    try:
        n_lines, n_bytes = small_files(home.projects, c.args.rescan_files, c.args.seed)
        d = Csmd(home).start()
        try:
            w = wait_db(d)
            done = w.wait_id(n_lines, timeout=600)
            w.close()
            if done is None:
                raise SystemExit("ingest of the small files did not finish in 600 s")
            c.out["many_files_sync_s"] = round(done - d.started, 2)
            wait_scanned(home, d)
            daemon_s, walls = [], []
            for _ in range(c.args.repeat):
                wall, out = csm(home, "sync", "--now", "--json")
                reply = json.loads(out)
                assert reply["files_scanned"] == c.args.rescan_files and reply["files_changed"] == 0, reply
                daemon_s.append(reply["seconds"])
                walls.append(wall)
            c.out["rescan_files"] = c.args.rescan_files
            c.out["rescan_s"] = round(median(daemon_s), 3)
            c.out["rescan_wall_s"] = round(median(walls), 3)
            c.out["many_files_rss_mb"] = round(d.peak_rss_mb(), 1)
        finally:
            d.stop()
    finally:
        home.cleanup()


# --- main -----------------------------------------------------------------------------


def table(out: dict[str, Any]) -> str:
    rows = []
    for key, value in out.items():
        mark = ""
        if key in TARGETS and isinstance(value, (int, float)):
            op, limit, _ = TARGETS[key]
            mark = f"{op} {limit:g}  " + ("ok" if value <= limit else "MISSED")
        rows.append(f"{key:<22} {value!s:<28} {mark}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark a real csmd (see bench/RESULTS.md).")
    ap.add_argument("--size", type=float, default=100.0, help="corpus size in MB for the initial sync")
    ap.add_argument("--repeat", type=int, default=3, help="initial syncs and rescans to take the median of")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="10 s idle window, 50 appends, one repeat")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--only", default="sync,rtt,fresh,idle,rescan", help="comma-separated phases to run")
    ap.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                    help="a config.toml line for csmd (TOML value), e.g. check_interval_s=0.01; repeatable")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (corpus, database, logs)")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="give up on an initial sync after this long "
                    "(a 4 GB history: 3600)")
    ap.add_argument("--corpus", type=Path, help="reuse a corpus folder written by bench/corpus.py (the fresh phase appends to it; "
                    "use it with --only sync)")
    a = ap.parse_args(argv)
    a.idle_s = 10.0 if a.quick else 60.0
    a.appends = 50 if a.quick else 200
    a.rtt_n = 10
    a.rescan_files = 10_000
    if a.quick:
        a.repeat = 1
    phases = set(a.only.split(","))
    base = Path(tempfile.mkdtemp(prefix="csm-bench-"))
    say = (lambda m: print(m, file=sys.stderr, flush=True))
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
        "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
        "loadavg_before": os.getloadavg()[0],
    }
    c = Ctx(a, base, out, say)
    started = time.perf_counter()
    home = Home(base, "main")
    if a.setting:
        cfg = home.dir / "config" / "csm" / "config.toml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text("".join(f"{s}\n" for s in a.setting))
        out["settings"] = a.setting
    d = None
    try:
        if phases & {"sync", "rtt", "queries", "fresh", "idle"}:
            t = time.perf_counter()
            if a.corpus:
                home.projects.rmdir()
                home.projects.symlink_to(a.corpus.resolve(), target_is_directory=True)
                files = sorted(home.projects.rglob("*.jsonl"))
                lines = sum(p.read_bytes().count(b"\n") for p in files)
                size = sum(p.stat().st_size for p in files)
            else:
                corp = write_corpus(home.projects, a.size, seed=a.seed)
                files, lines, size = corp.files, corp.lines, corp.bytes
            out["corpus_mb"] = round(size / 1e6, 1)
            out["corpus_files"] = len(files)
            out["corpus_lines"] = lines
            say(f"corpus: {len(files)} files, {lines} lines, {size / 1e6:.1f} MB "
                f"({time.perf_counter() - t:.1f} s to write)")
            d = phase_sync(c, home, lines, size)
            if "rtt" in phases:
                phase_rtt(c, home, d)
            if "queries" in phases:
                phase_queries(c, home, d)
            if "fresh" in phases:
                phase_fresh(c, home, d, files)
            if "idle" in phases:
                phase_idle(c, home, d)
            out["rss_end_mb"] = round(d.peak_rss_mb(), 1)
            d.stop()
            db_size(c, home, size)
        if "backlog" in phases:
            if not a.corpus:
                raise SystemExit("--only backlog needs --corpus")
            lines = sum(p.read_bytes().count(b"\n") for p in a.corpus.rglob("*.jsonl"))
            phase_backlog(c, a.corpus, lines)
        if "rescan" in phases:
            phase_rescan(c)
    finally:
        if d is not None:
            d.stop()
        home.cleanup()
        if a.keep:
            say(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    out["loadavg_after"] = os.getloadavg()[0]
    out["bench_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2) if a.json else table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

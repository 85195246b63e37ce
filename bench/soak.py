"""Soak: many live transcripts appended at a steady rate while clients keep asking.

A real csmd on private temporary paths; ``--files`` transcripts appended round-robin
at ``--rate`` lines/s in total for ``--seconds``, while ``--clients`` clients (threads of
a process of their own) ask over the real socket in a loop: status, SQL, sessions, search
and usage (``MIX``), ``--think`` seconds apart. It measures, from outside:

- exactly once: every written line is a row, once (uuids are unique per line);
- freshness: time from a line's write to its row being visible to a reader
  (a separate process polling every 5 ms, so figures carry up to ~5 ms of polling delay);
- csmd's peak RSS (``/proc/<pid>/status``) and the WAL file's peak size, sampled every 0.25 s;
- client answers: calls, failures, latency (all, and per kind of request);
- while the lines are written, figures the machine's load does not move: csmd's CPU and the ingest
  thread's per 1,000 lines (``/proc``; the thread found with ``py-spy dump`` when it is installed),
  the ingest thread's writes (the WAL: MB/s and write calls, about one per page) and the checkpoint
  thread's (the database file), and the transactions committed per second (``csm status``).

Targets (issue 7): freshness p99 < 250 ms, RSS < 80 MB, every line once; with 20 clients
(issue 10) freshness p99 ≤ 250 ms still, and p50 ≤ 20 ms.

    python bench/soak.py                      # the full run: 50 files, 2,000 lines/s, 60 s
    python bench/soak.py --clients 20         # under load: 20 clients querying
    python bench/soak.py --seconds 10 --json  # short, machine-readable (the test suite uses this)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.queues as mp_queue
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from csmtest import Csmd, isolated_env  # noqa: E402

TARGET_P99_MS = 250.0
TARGET_RSS_MB = 80.0


@dataclass
class Result:
    files: int
    rate: float
    seconds: float
    written: int = 0
    rows: int = 0
    distinct: int = 0
    bad_lines: int = 0
    achieved_rate: float = 0.0
    fresh_p50_ms: float = 0.0
    fresh_p99_ms: float = 0.0
    fresh_max_ms: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    wal_peak_mb: float = 0.0
    wal_end_mb: float = 0.0
    client_calls: int = 0
    client_failures: int = 0
    client_p99_ms: float = 0.0
    clients: int = 0
    client_kinds: dict[str, dict[str, float]] = field(default_factory=dict)
    load_avg: float = 0.0
    csmd_cpu_ms_per_1k: float = 0.0
    ingest_cpu_ms_per_1k: float | None = None
    wal_write_mb_s: float | None = None
    wal_writes_per_s: float | None = None
    db_write_mb_s: float | None = None
    commits_per_s: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def exactly_once(self) -> bool:
        return self.rows == self.distinct == self.written and self.bad_lines == 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def rss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return 0.0


def threads(pid: int) -> dict[str, int]:
    """csmd's threads by name (``csm-ingest``: tid), from ``py-spy dump``; empty without py-spy."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        out = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for row in out.splitlines():
        if row.startswith("Thread ") and '"' in row:
            found[row.split('"')[1]] = int(row.split()[1])
    return found


def cpu_s(path: str) -> float:
    """utime + stime of a process or thread (``/proc/<pid>[/task/<tid>]/stat``), in seconds."""
    fields = Path(path, "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def io(path: str) -> dict[str, int]:
    """``/proc/<pid>/task/<tid>/io``: wchar (bytes written), syscw (write calls), …"""
    return {k: int(v) for k, v in (row.split(": ") for row in Path(path, "io").read_text().splitlines())}


class Counters:
    """The load-insensitive figures, read when the writing starts and when it ends."""

    def __init__(self, pid: int, tids: dict[str, int], commits: int | None) -> None:
        self.at = time.monotonic()
        self.cpu = cpu_s(f"/proc/{pid}")
        self.ingest = tids.get("csm-ingest")
        self.checkpoint = tids.get("csm-checkpoint")
        self.ingest_cpu = cpu_s(f"/proc/{pid}/task/{self.ingest}") if self.ingest else 0.0
        self.wal = io(f"/proc/{pid}/task/{self.ingest}") if self.ingest else {}
        self.db = io(f"/proc/{pid}/task/{self.checkpoint}") if self.checkpoint else {}
        self.commits = commits

    def into(self, r: Result, start: Counters) -> None:
        secs, per_1k = self.at - start.at, 1000 / max(r.written, 1)
        r.csmd_cpu_ms_per_1k = round((self.cpu - start.cpu) * 1000 * per_1k, 2)
        if self.ingest:
            r.ingest_cpu_ms_per_1k = round((self.ingest_cpu - start.ingest_cpu) * 1000 * per_1k, 2)
            r.wal_write_mb_s = round((self.wal["wchar"] - start.wal["wchar"]) / 2**20 / secs, 1)
            r.wal_writes_per_s = round((self.wal["syscw"] - start.wal["syscw"]) / secs)
        if self.checkpoint:
            r.db_write_mb_s = round((self.db["wchar"] - start.db["wchar"]) / 2**20 / secs, 1)
        if self.commits is not None and start.commits is not None:
            r.commits_per_s = round((self.commits - start.commits) / secs, 1)


def transcript_line(session: str, seq: int) -> bytes:
    """A user prompt or an assistant answer with its usage (~600 bytes), alternately, with a unique uuid."""
    text = f"line {seq} of {session}: " + "lorem ipsum dolor sit amet " * 14
    obj: dict[str, Any] = {
        "parentUuid": f"{session}-{seq - 1}" if seq else None, "isSidechain": False, "userType": "external",
        "cwd": "/home/me/project", "sessionId": session, "version": "2.0.0", "gitBranch": "main", "type": "user",
        "message": {"role": "user", "content": text},
        "uuid": f"{session}-{seq}", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }
    if seq % 2:
        obj["type"] = "assistant"
        obj["requestId"] = f"req_{session}_{seq}"
        obj["message"] = {
            "id": f"msg_{session}_{seq}", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 12, "output_tokens": 345, "cache_creation_input_tokens": 678,
                      "cache_read_input_tokens": 9012},
        }
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def observe(db: str, ready: Any, expected: mp_queue.Queue, out: mp_queue.Queue) -> None:
    """In its own process (so the load's threads cannot delay it): when each row became visible.

    Polls every 5 ms until it has seen as many rows as ``expected`` says were written
    (or 30 s pass after that number arrives); ``time.monotonic`` is system-wide, so its
    times compare with the writer's.
    """
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    ready.set()
    seen: dict[str, float] = {}
    last = 0
    total: int | None = None
    deadline = float("inf")
    while total is None or (len(seen) < total and time.monotonic() < deadline):
        rows = conn.execute("SELECT id, uuid FROM events WHERE id > ? ORDER BY id", (last,)).fetchall()
        now = time.monotonic()
        for rowid, uuid in rows:
            seen.setdefault(uuid, now)
            last = rowid
        if total is None and not expected.empty():
            total = expected.get()
            deadline = time.monotonic() + 30
        time.sleep(0.005)
    conn.close()
    out.put(seen)


MIX = ("status", "sql count", "sql top", "sql rows", "sessions", "search", "usage")
"""What each client asks, in turn (each client starts at a different place): ``csm status``,
``csm query sql`` (a count over every line, a small report, one session's raw lines, up to
2,000 rows, ~1 MB), ``csm query sessions``, ``csm query search`` and ``csm query usage``."""


def _request(kind: str, n: int, files: int) -> Any:
    from csm.shared import protocol

    session = f"s{n % files:02d}"
    match kind:
        case "status":
            return protocol.Status()
        case "sql count":
            return protocol.Query(sql="SELECT count(*) FROM lines")
        case "sql top":
            return protocol.Query(sql="SELECT session_id, lines FROM sessions ORDER BY lines DESC LIMIT 5")
        case "sql rows":
            return protocol.Query(sql="SELECT uuid, timestamp, raw FROM lines WHERE session_id = ?", params=[session],
                                  max_rows=2000)
        case "sessions":
            return protocol.Sessions()
        case "search":
            return protocol.Search(text=session)
        case "usage":
            return protocol.UsageReport(by="day")
    raise ValueError(kind)


def ask(sock: str, clients: int, files: int, think_s: float, stop: Any, out: mp_queue.Queue) -> None:
    """In its own process (so the clients' threads cannot slow the writer): ``clients`` threads,
    each sending the ``MIX`` in turn and waiting ``think_s`` between answers, until ``stop``.
    Puts (kind -> latencies in s, failures) on ``out``."""
    from csm.client.transport import request

    latencies: dict[str, list[float]] = {k: [] for k in MIX}
    failures: list[str] = []

    def client(c: int) -> None:
        n = c
        while not stop.is_set():
            kind = MIX[n % len(MIX)]
            t = time.monotonic()
            try:
                request(_request(kind, n, files), timeout_s=10.0, sock=Path(sock))
                latencies[kind].append(time.monotonic() - t)
            except Exception as e:
                failures.append(f"client {kind}: {type(e).__name__}: {e}")
            n += 1
            stop.wait(think_s)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, failures))


class Soak:
    def __init__(self, files: int, rate: float, seconds: float, clients: int, think_s: float = 0.02) -> None:
        self.result = Result(files=files, rate=rate, seconds=seconds, clients=clients)
        self.clients = clients
        self.think_s = think_s
        self.work = Path(tempfile.mkdtemp(prefix="csm-soak-"))
        self.env = dict(os.environ) | isolated_env(self.work)  # the tests' isolation
        self.run_dir = Path(self.env["XDG_RUNTIME_DIR"])
        self.projects = self.work / "claude" / "projects"
        self.db = self.work / "data" / "csm" / "csm.db"
        self.written_at: dict[str, float] = {}
        self.seen_at: dict[str, float] = {}
        self.writing = threading.Event()
        self.csmd = Csmd(self.work, env=self.env)  # the tests' launcher; readiness is asked in this env below

    # --- csmd -----------------------------------------------------------------------

    def start(self) -> None:
        self.projects.mkdir(parents=True)
        self.csmd.start(wait=False)
        deadline = time.monotonic() + 30
        while True:
            r = subprocess.run([sys.executable, "-m", "csm.client", "status", "--json"], env=self.env,
                               capture_output=True, text=True)
            if r.returncode == 0 and json.loads(r.stdout).get("last_sync_at"):
                return
            if not self.csmd.alive or time.monotonic() > deadline:
                raise SystemExit(f"csmd did not start:\n{self.csmd.log()}")
            time.sleep(0.1)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.csmd.proc

    def commits(self) -> int | None:
        """``commits`` from ``csm status`` (None from a csmd without it)."""
        r = subprocess.run([sys.executable, "-m", "csm.client", "status", "--json"], env=self.env,
                           capture_output=True, text=True)
        return json.loads(r.stdout).get("commits") if r.returncode == 0 else None

    def stop(self) -> None:
        if self.csmd.alive:
            self.csmd.stop(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # --- the load -------------------------------------------------------------------

    def writer(self) -> None:
        r = self.result
        sessions = [f"s{i:02d}" for i in range(r.files)]
        fds = []
        for s in sessions:
            (self.projects / f"-home-me-p{s}").mkdir()
            fds.append(os.open(self.projects / f"-home-me-p{s}" / f"{s}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                               0o600))
        seq = [0] * r.files
        n = 0
        start = time.monotonic()
        self.writing.set()
        while (elapsed := time.monotonic() - start) < r.seconds:
            due = int(elapsed * r.rate)
            while n < due:
                i = n % r.files
                data = transcript_line(sessions[i], seq[i])
                os.write(fds[i], data)
                self.written_at[f"{sessions[i]}-{seq[i]}"] = time.monotonic()
                seq[i] += 1
                n += 1
            time.sleep(0.002)
        r.written = n
        r.achieved_rate = n / (time.monotonic() - start)
        for fd in fds:
            os.close(fd)
        self.writing.clear()


    def run(self) -> Result:
        r = self.result
        self.start()
        assert self.proc is not None
        r.rss_start_mb = rss_mb(self.proc.pid)
        ctx = multiprocessing.get_context("spawn")
        expected: mp_queue.Queue = ctx.Queue()
        out: mp_queue.Queue = ctx.Queue()
        ready = ctx.Event()
        observer = ctx.Process(target=observe, args=(str(self.db), ready, expected, out), daemon=True)
        observer.start()
        if not ready.wait(30):
            raise SystemExit("the observer process did not start")
        tids = threads(self.proc.pid)
        writer = threading.Thread(target=self.writer, daemon=True)
        start = Counters(self.proc.pid, tids, self.commits())
        writer.start()
        self.writing.wait(10)
        stop_asking = ctx.Event()
        answers: mp_queue.Queue = ctx.Queue()
        from csm.shared import paths

        sock = Path(self.env["XDG_RUNTIME_DIR"]) / "csm" / paths.SOCKET_NAME
        asker = ctx.Process(target=ask, args=(str(sock), self.clients, r.files, self.think_s, stop_asking, answers),
                            daemon=True)
        asker.start()
        peak = r.rss_start_mb
        wal = Path(f"{self.db}-wal")
        wal_peak = 0
        while writer.is_alive():
            peak = max(peak, rss_mb(self.proc.pid))
            wal_peak = max(wal_peak, wal.stat().st_size if wal.exists() else 0)
            writer.join(0.25)
        Counters(self.proc.pid, tids, self.commits()).into(r, start)
        r.load_avg = os.getloadavg()[0]
        expected.put(r.written)
        stop_asking.set()
        latencies, failures = answers.get(timeout=60)
        asker.join(10)
        while observer.is_alive() and out.empty():
            peak = max(peak, rss_mb(self.proc.pid))
            time.sleep(0.05)
        self.seen_at = out.get(timeout=60)
        observer.join(10)
        r.rss_peak_mb = round(peak, 1)
        r.wal_peak_mb = round(wal_peak / 2**20, 1)
        r.wal_end_mb = round((wal.stat().st_size if wal.exists() else 0) / 2**20, 1)
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        r.rows, r.distinct = conn.execute("SELECT count(*), count(DISTINCT uuid) FROM events").fetchone()
        r.bad_lines = conn.execute("SELECT count(*) FROM sync_errors").fetchone()[0]
        conn.close()
        fresh = [(self.seen_at[u] - w) * 1000 for u, w in self.written_at.items() if u in self.seen_at]
        r.fresh_p50_ms, r.fresh_p99_ms = round(pct(fresh, 50), 1), round(pct(fresh, 99), 1)
        r.fresh_max_ms = round(max(fresh, default=0.0), 1)
        every = [x for xs in latencies.values() for x in xs]
        r.client_calls = len(every) + len(failures)
        r.client_failures = len(failures)
        r.failures += failures[:20]
        r.client_p99_ms = round(pct(every, 99) * 1000, 1)
        r.client_kinds = {k: {"calls": len(xs), "p50_ms": round(pct(xs, 50) * 1000, 1),
                              "p99_ms": round(pct(xs, 99) * 1000, 1)} for k, xs in latencies.items()}
        r.achieved_rate = round(r.achieved_rate, 1)
        if self.proc.poll() is not None:
            r.failures.append(f"csmd exited with {self.proc.returncode}")
        return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--rate", type=float, default=2000.0, help="lines per second, all files together")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=2, help="concurrent querying clients (issue 10: 20)")
    ap.add_argument("--think", type=float, default=0.02, help="seconds each client waits between answers")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    soak = Soak(args.files, args.rate, args.seconds, args.clients, args.think)
    try:
        r = soak.run()
    finally:
        soak.stop()
    verdicts = {
        "every line once": r.exactly_once,
        f"freshness p99 < {TARGET_P99_MS:g} ms": r.fresh_p99_ms < TARGET_P99_MS,
        f"csmd RSS < {TARGET_RSS_MB:g} MB": r.rss_peak_mb < TARGET_RSS_MB,
        "every client call answered": r.client_failures == 0 and r.client_calls > 0,
    }
    if args.json:
        print(json.dumps({**asdict(r), "exactly_once": r.exactly_once, "verdicts": verdicts}))
    else:
        print(f"soak: {r.files} files, {r.written} lines in {r.seconds:g} s ({r.achieved_rate:g} lines/s, "
              f"target {r.rate:g})")
        print(f"  rows {r.rows}, distinct {r.distinct}, bad lines {r.bad_lines}")
        print(f"  freshness p50 {r.fresh_p50_ms} ms, p99 {r.fresh_p99_ms} ms, max {r.fresh_max_ms} ms")
        print(f"  csmd RSS {r.rss_start_mb:.1f} MB at start, peak {r.rss_peak_mb} MB")
        print(f"  WAL peak {r.wal_peak_mb} MB, {r.wal_end_mb} MB at the end")
        print(f"  csmd CPU {r.csmd_cpu_ms_per_1k} ms per 1,000 lines, the ingest thread's {r.ingest_cpu_ms_per_1k}; "
              f"WAL written {r.wal_write_mb_s} MB/s in {r.wal_writes_per_s} writes/s, database {r.db_write_mb_s} MB/s; "
              f"{r.commits_per_s} commits/s; load average {r.load_avg:.1f}")
        print(f"  {r.clients} clients: {r.client_calls} calls, {r.client_failures} failed, p99 {r.client_p99_ms} ms")
        for kind, k in r.client_kinds.items():
            print(f"    {kind:10} {k['calls']:6} calls, p50 {k['p50_ms']} ms, p99 {k['p99_ms']} ms")
        for f in r.failures[:5]:
            print(f"  ! {f}")
        for name, ok in verdicts.items():
            print(f"  {'PASS' if ok else 'FAIL'} {name}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

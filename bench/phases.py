"""csmd's memory through every phase of a first sync, sampled from /proc/<pid>/status.

    pip install -e . && python bench/phases.py --corpus DIR [--clients 4] [--serve] [--idle-s 20] [--restart]

Phases, each csmd's peak ``VmRSS`` (sampled every 20 ms), its RSS at the phase's end and the CPU seconds
csmd spent in it:

- ``sync``: from start until every line of the corpus is a row (``bench/corpus.py`` makes DIR);
- ``catch-up``: until the search text deferred by the initial sync is indexed (``search_text_pending``
  and ``search_tools_pending`` empty);
- ``idle``: ``--idle-s`` seconds of nothing to do afterwards (the RSS at its end is "idle after");
- ``restart`` (``--restart``): a second csmd on the same database and corpus, until it is watching.

``--clients N`` runs N threads sending ``usage --by day``, ``sessions``, ``search`` and ``status``
requests in turn during the sync and catch-up; ``--serve`` starts ``csm serve`` (a client of csmd with
one ``Watch``) and fetches its pages meanwhile. ``--breakdown`` runs csmd under ``bench/probe.py``, which
logs csmd's SQLite heap, glibc arena and Python block counts beside its RSS (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Csmd, Home, csm_cmd, pending_sql, wait_db  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """csmd's RSS every 20 ms; ``mark(name)`` closes a phase and records its peak and last value."""

    def __init__(self, d: Csmd) -> None:
        super().__init__(daemon=True)
        self.pid = d.pid
        self.cpu_s = d.cpu_s
        """csmd's CPU seconds so far: what a phase cost, whatever the load beside it."""
        self.peak = 0.0
        self.last = 0.0
        self.phases: dict[str, dict[str, float]] = {}
        self.started = time.monotonic()
        self.cpu = self.cpu_s()
        self.done = False

    def run(self) -> None:
        while not self.done:
            try:
                self.last = rss_mb(self.pid)
            except OSError:
                return
            self.peak = max(self.peak, self.last)
            time.sleep(0.02)

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.last = rss_mb(self.pid)
        cpu = self.cpu_s()
        self.phases[name] = {"peak_mb": round(max(self.peak, self.last), 1), "end_mb": round(self.last, 1),
                             "seconds": round(now - self.started, 1), "cpu_s": round(cpu - self.cpu, 2)}
        self.peak, self.started, self.cpu = self.last, now, cpu


class Clients:
    """N threads asking csmd what people ask (in-process requests: no interpreter start-up per call)."""

    def __init__(self, home: Home, n: int) -> None:
        self.sock = Path(home.env["XDG_RUNTIME_DIR"]) / "csm" / "csmd.sock"
        self.stop = threading.Event()
        self.answers = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        from csm.client.transport import request
        from csm.shared import protocol as p

        asks = [p.UsageReport(by="day"), p.Sessions(), p.Search(text="error", include_tools=True), p.Status()]
        k = i
        while not self.stop.is_set():
            try:
                request(asks[k % len(asks)], sock=self.sock, timeout_s=30.0)
                self.answers += 1
            except Exception:  # busy, or csmd not yet listening: try the next one
                time.sleep(0.05)
            k += 1
            time.sleep(0.02)

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(35)


class Serve:
    """``csm serve`` on a free port, its session list fetched every 0.5 s."""

    def __init__(self, home: Home) -> None:
        self.proc = subprocess.Popen([*csm_cmd(), "serve", "--port", "0"], env=home.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        self.url = line.split("csm serve: ", 1)[-1].strip()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        while not self.stop.is_set():
            try:
                opener.open(self.url, timeout=30).read()
            except Exception:
                pass
            self.stop.wait(0.5)

    def close(self) -> None:
        self.stop.set()
        self.proc.terminate()
        self.proc.wait(10)


def pending(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(pending_sql(conn)).fetchone()[0]
    except sqlite3.Error:
        return -1
    finally:
        conn.close()


def state(home: Home) -> str:
    r = subprocess.run([*csm_cmd(), "status", "--json"], env=home.env, capture_output=True, text=True)
    return json.loads(r.stdout).get("state", "") if r.returncode == 0 else ""


def until(cond: Any, d: Csmd, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        d.check()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def start(home: Home, breakdown: Path | None) -> Csmd:
    d = Csmd(home)
    if breakdown is None:
        return d.start()
    env = dict(home.env, PROBE_OUT=str(breakdown))
    with open(d.log_path, "ab") as log:
        d.started = time.perf_counter()
        d.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("probe.py"))], stdout=log, stderr=log,
                                  env=env)
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="a folder written by bench/corpus.py")
    ap.add_argument("--clients", type=int, default=0)
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--restart", action="store_true")
    ap.add_argument("--breakdown", type=Path, help="run csmd under bench/probe.py, logging its heap figures here")
    ap.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="csm-phases-"))
    home = Home(base, "main")
    home.projects.rmdir()
    home.projects.symlink_to(a.corpus.resolve(), target_is_directory=True)
    if a.setting:
        cfg = home.dir / "config" / "csm" / "config.toml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text("".join(f"{s}\n" for s in a.setting))
    files = sorted(home.projects.rglob("*.jsonl"))
    lines = sum(p.read_bytes().count(b"\n") for p in files)
    out: dict[str, Any] = {"corpus_mb": round(sum(p.stat().st_size for p in files) / 1e6, 1), "lines": lines,
                           "clients": a.clients, "serve": a.serve, "loadavg_before": os.getloadavg()[0]}
    d = start(home, a.breakdown)
    serve = None
    try:
        w = wait_db(d)
        s = Sampler(d)
        s.start()
        with Clients(home, a.clients):
            if a.serve:
                serve = Serve(home)
            until(lambda: w.max_id() >= lines, d, 1200, "the rows")
            s.mark("sync")
            until(lambda: pending(home.db) == 0 and state(home) == "watching", d, 1200, "the tool text")
            s.mark("catch-up")
        if serve is not None:
            serve.close()
            serve = None
        w.close()
        time.sleep(a.idle_s)
        s.mark("idle")
        s.done = True
        out["phases"] = s.phases
        if a.restart:
            d.stop()
            d = start(home, None)
            s = Sampler(d)
            s.start()
            until(lambda: state(home) == "watching", d, 600, "the restart's scan")
            time.sleep(2)
            s.mark("restart")
            s.done = True
            out["phases"]["restart"] = s.phases["restart"]
    finally:
        if serve is not None:
            serve.close()
        d.stop()
        home.cleanup()
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    out["loadavg_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

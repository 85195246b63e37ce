"""Measure what browsing costs: the search sink's share of an initial sync, and query times.

    python bench/browse_speed.py corpus DIR MB      # DIR/projects: real fixtures copied to MB megabytes
    python bench/browse_speed.py ingest DIR         # initial sync of DIR/projects, with and without search
    python bench/browse_speed.py queries DB         # sessions, search and show inside the daemon's code, warm

The corpus copies tests/fixtures/real under fresh session ids until it reaches the size
asked for (a quick stand-in until bench/corpus.py exists). Everything runs in-process with
the daemon's own classes, so the figures are the work itself, without socket or start-up.

Measured 2026-11-21 on the 2-core test machine while other jobs kept its load average at 3-8
(wall times are inflated; CPU times are the steadier figure):

- initial sync of 100 MB (49,966 lines), writer and search sink only (two runs): search off
  1.6-2.1 s CPU, database 129 MB; all search text inline 4.1-4.9 s CPU; tool text deferred (what
  csmd does for a large backlog) 2.5-3.0 s CPU, then 2.5-3.1 s CPU for the tool text after;
  database 152 MB. Wall times of the same runs varied 2x with the machine's load (3.7-11.5 s).
- 1 GB (499,079 lines) with the usage and search sinks: 135 s wall / 65 s CPU, database 1.5 GB,
  of which the search tables take about 223 MB (message_text 109, search_tools 81, search_text 27).
- queries on that 1 GB archive, in-process median of 20 (max): sessions 0.4 ms (0.5); search
  'phoenix' 6.8 ms (23), 'the' 11.8 ms (23), 'mix phx.server' 9.6 ms (11), --include-tools
  10-20 ms (27); messages of one session 0.1 ms. Through the socket (no start-up): sessions
  1.1 ms, search 6-11 ms. From the shell, best of 5 at load 3: csm status 0.16 s, csm query
  sessions 0.13 s, csm query search 0.16-0.19 s (start-up bound: python -c pass is 0.05 s).
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from csm.daemon import browse, search
from csm.daemon.ingest import Ingestor
from csm.daemon.store import Store, open_reader, open_writer
from csm.shared.config import Config
from csm.shared.protocol import Search, Sessions, Show

REAL = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "real"


def corpus(out: Path, megabytes: int) -> None:
    files = [(p, p.read_bytes()) for p in sorted(REAL.rglob("*.jsonl")) if p.stat().st_size > 0]
    projects = out / "projects"
    total, i = 0, 0
    while total < megabytes * 1_000_000:
        for p, data in files:
            old = p.stem
            new = str(uuid.uuid4())
            data = data.replace(old.encode(), new.encode())
            dest = projects / f"proj{i % 40}" / f"{new}.jsonl"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            total += len(data)
            i += 1
    print(f"{total / 1e6:.0f} MB in {i} files under {projects}")


def ingest(root: Path) -> None:
    """Initial sync without search, with search inline, and with the tool text deferred (as csmd does)."""
    for mode in ("off", "inline", "deferred"):
        tmp = Path(tempfile.mkdtemp())
        store = Store(open_writer(tmp / "csm.db"))
        ing = Ingestor(store, [root / "projects"], Config())
        index = search.SearchIndex(defer=lambda: mode == "deferred")
        if mode != "off":
            ing.sinks.append(index)
        t, cpu = time.perf_counter(), time.process_time()
        totals = ing.rescan()
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        line = f"search {mode:8}: {totals.lines} lines in {seconds:.1f} s ({cpu:.1f} s CPU)"
        if mode == "deferred":
            t, cpu = time.perf_counter(), time.process_time()
            index.idle(store, lambda: False)
            line += f", then tool text in {time.perf_counter() - t:.1f} s ({time.process_time() - cpu:.1f} s CPU)"
        store.close()
        size = sum(f.stat().st_size for f in tmp.iterdir())
        print(f"{line}, database {size / 1e6:.0f} MB")
        shutil.rmtree(tmp)


def _time(fn, n: int = 20) -> str:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return f"median {statistics.median(times):.1f} ms, max {max(times):.1f} ms"


def queries(db: Path) -> None:
    conn: sqlite3.Connection = open_reader(db)
    lines = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    print(f"{db}: {lines} lines")
    print("sessions              ", _time(lambda: browse.sessions(conn, Sessions())))
    print("sessions --project    ", _time(lambda: browse.sessions(conn, Sessions(project="proj3"))))
    for q in ("phoenix", "xylophone", "the", "mix phx.server", "pydantic OR zeromq", "daemon", "async config"):
        print(f"search {q!r:22}", _time(lambda: search.search(conn, Search(text=q))))
    for q in ("phoenix", "elixirforum", "the", "daemon"):
        print(f"search {q!r:13} +tools", _time(lambda: search.search(conn, Search(text=q, include_tools=True))))
    print("search 'the' -p proj3 ", _time(lambda: search.search(conn, Search(text="the", project="proj3"))))
    # show reads every line of the session through RAW (decompressed when the session is stored compressed)
    for which, order in (("longest", "DESC"), ("median", "")):
        n = conn.execute("SELECT count(*) FROM session_stats").fetchone()[0]
        sid, lines = conn.execute(f"SELECT session_id, lines FROM session_stats ORDER BY lines {order} LIMIT 1 "
                                  "OFFSET ?", (0 if order else n // 2,)).fetchone()
        print(f"show {which} ({lines} lines)".ljust(22), _time(lambda: browse.show(conn, Show(session=sid)), 5))


if __name__ == "__main__":
    cmd, arg = sys.argv[1], Path(sys.argv[2])
    if cmd == "corpus":
        corpus(arg, int(sys.argv[3]))
    elif cmd == "ingest":
        ingest(arg)
    else:
        queries(arg)

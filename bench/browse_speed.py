"""Measure what browsing costs: the search sink's share of an initial sync, and query times.

    python bench/browse_speed.py corpus DIR MB      # DIR/projects: real fixtures copied to MB megabytes
    python bench/browse_speed.py ingest DIR         # initial sync of DIR/projects, with and without search
    python bench/browse_speed.py queries DB         # sessions and search inside the daemon's code, warm

The corpus copies tests/fixtures/real under fresh session ids until it reaches the size
asked for (a quick stand-in until bench/corpus.py exists). Everything runs in-process with
the daemon's own classes, so the figures are the work itself, without socket or start-up.

Measured 2026-11-21 on the 2-core test machine while other jobs kept its load average at 5-8
(wall times are inflated; CPU times are the steadier figure):

- initial sync of 100 MB (49,966 lines): search off 11.3 s wall / 2.6 s CPU, database 129 MB;
  search on 13.3 s wall / 4.8 s CPU, database 152 MB.
- 1 GB (499,079 lines): 174 s wall / 60 s CPU with search; the search tables take 223 MB of the
  1.5 GB database (message_text 109, search_tools 81, search_text 27, index 6).
- queries on that 1 GB archive, median of 20 (max): sessions 0.1 ms (0.2); search 'phoenix'
  10.8 ms (22.7), 'the' 13.6 ms (30.1), 'mix phx.server' 11.1 ms (22.4), --include-tools 17-23 ms
  (43); messages of one session 0.1 ms.
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
from csm.shared.protocol import Search, Sessions

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
    for with_search in (False, True):
        tmp = Path(tempfile.mkdtemp())
        store = Store(open_writer(tmp / "csm.db"))
        ing = Ingestor(store, [root / "projects"], Config())
        if with_search:
            ing.sinks.append(search.SearchIndex())
        t, cpu = time.perf_counter(), time.process_time()
        totals = ing.rescan()
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        store.close()
        size = sum(f.stat().st_size for f in tmp.iterdir())
        print(f"search={'on ' if with_search else 'off'}: {totals.lines} lines in {seconds:.1f} s ({cpu:.1f} s CPU), "
              f"database {size / 1e6:.0f} MB")
        if with_search:
            print(f"kept at {tmp / 'csm.db'}")
        else:
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
    for q in ("phoenix", "xylophone", "the", "mix phx.server", "pydantic OR zeromq"):
        print(f"search {q!r:22}", _time(lambda: search.search(conn, Search(text=q))))
    for q in ("phoenix", "elixirforum", "the"):
        print(f"search {q!r:13} +tools", _time(lambda: search.search(conn, Search(text=q, include_tools=True))))
    print("search 'the' -p proj3 ", _time(lambda: search.search(conn, Search(text="the", project="proj3"))))


if __name__ == "__main__":
    cmd, arg = sys.argv[1], Path(sys.argv[2])
    if cmd == "corpus":
        corpus(arg, int(sys.argv[3]))
    elif cmd == "ingest":
        ingest(arg)
    else:
        queries(arg)

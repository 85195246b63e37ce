"""Archival: how long ``csm archive`` takes, what it saves, and what reading archived sessions costs.

    python bench/corpus.py /tmp/arch-c100 --size-mb 100          # once
    python bench/archive.py --corpus /tmp/arch-c100 --repeat 15 [--compressed]

A real csmd ingests the corpus (and indexes its deferred tool text); then, asked from this process
over the socket (the daemon's part, no CLI start-up), medians of ``--repeat`` runs of: a search of a
word in ~every line, the same with a ``--since`` filter (it joins each hit to ``events``), a tool-text
search, ``Show(full)`` of the largest session, and ``export --raw`` of it (MB/s). Then every session is
archived (``csm archive --before 2099-01-01``) and the same figures are taken again, interleaved with
nothing else; the sizes (main + WAL, archives) are printed before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import csmtest  # noqa: E402


def _timed(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def measure(session: str, n: int) -> dict[str, float]:
    from csm.client.export import receive
    from csm.client.transport import request
    from csm.shared import protocol

    out: dict[str, float] = {}
    for name, msg in {"search_error": protocol.Search(text="error"),
                      "search_error_since": protocol.Search(text="error", since="2000-01-01T00:00:00"),
                      "search_tools": protocol.Search(text="error", include_tools=True),
                      "show_full": protocol.Show(session=session, full=True),
                      "show_page": protocol.Show(session=session, full=True, limit=200)}.items():
        out[f"{name}_ms"] = round(_timed(lambda m=msg: request(m, timeout_s=60), n), 2)
    size = [0]

    def export() -> None:
        buf = io.BytesIO()
        receive(session, "jsonl", buf)
        size[0] = len(buf.getvalue())

    ms = _timed(export, max(3, n // 3))
    out["export_ms"] = round(ms, 1)
    out["export_mb_s"] = round(size[0] / 2**20 / (ms / 1000), 1)
    return out


def sizes(db: Path) -> dict[str, float]:
    main = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    archives = sum(p.stat().st_size for p in db.parent.glob(f"{db.stem}-archive-*{db.suffix}"))
    return {"main_mb": round(main / 2**20, 1), "archives_mb": round(archives / 2**20, 1)}


def unarchived_twin(db: Path, twin: Path) -> None:
    """A copy of ``db`` whose archived rows are back in its own ``events``, as they are (compressed):
    the same lines, the same pages of derived data, only where the rows live differs."""
    import sqlite3

    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    dst = sqlite3.connect(twin, isolation_level=None)
    src.backup(dst)
    src.close()
    for (name,) in dst.execute("SELECT name FROM archives").fetchall():
        dst.execute("ATTACH ? AS a", (str(db.with_name(f"{db.stem}-archive-{name}{db.suffix}")),))
        dst.execute("INSERT INTO main.events SELECT * FROM a.events")
        dst.execute("DETACH a")
    dst.execute("DELETE FROM archived_files")
    dst.execute("DELETE FROM archives")
    dst.execute("VACUUM")
    dst.close()


def ab(db: Path, repeat: int) -> dict[str, object]:
    """The readers' queries on the archived database and on its unarchived twin, in this process (no
    socket), interleaved run by run: show of the largest session, its export's rows, searches."""
    from csm.daemon import browse, export, search
    from csm.daemon.store import open_reader
    from csm.shared import protocol

    twin = db.with_name("twin.db")
    if not twin.exists():
        unarchived_twin(db, twin)
    conns = {"archived": open_reader(db), "main": open_reader(twin)}
    session = conns["main"].execute(
        "SELECT session_id, file_id FROM session_stats WHERE NOT is_subagent ORDER BY lines DESC LIMIT 1").fetchone()
    work: dict[str, Callable[[object], object]] = {
        "show_full": lambda c: browse.show(c, protocol.Show(session=session[0], full=True)),
        "export_rows": lambda c: sum(len(b) for b, _ in export._raw_lines(c, session[1])),
        "search_error": lambda c: search.search(c, protocol.Search(text="error")),
        "search_error_since": lambda c: search.search(c, protocol.Search(text="error", since="2000-01-01T00:00:00")),
        "search_tools": lambda c: search.search(c, protocol.Search(text="error", include_tools=True)),
    }
    times: dict[str, dict[str, list[float]]] = {w: {k: [] for k in conns} for w in work}
    for n in range(repeat):
        for w, fn in work.items():
            for k in sorted(conns, reverse=n % 2 == 1):  # each goes first every other run
                t = time.perf_counter()
                fn(conns[k])
                times[w][k].append(time.perf_counter() - t)
    return {"load": os.getloadavg(), **{
        f"{w}_ms": {k: f"median {statistics.median(v) * 1000:.2f}, min {min(v) * 1000:.2f}" for k, v in t.items()}
        for w, t in times.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, help="the transcripts (bench/corpus.py makes them)")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--compressed", action="store_true",
                    help="compress every line first (compress_after_days = 0): archival's own cost, apart from zstd's")
    ap.add_argument("--keep", action="store_true", help="leave the database and archives (their folder is printed)")
    ap.add_argument("--ab", type=Path, metavar="DB",
                    help="instead: time the readers' queries on an archived database kept by --keep against its "
                         "unarchived twin, interleaved")
    args = ap.parse_args()
    if args.ab:
        print(json.dumps(ab(args.ab, args.repeat), indent=2))
        return 0
    base = Path(tempfile.mkdtemp(prefix="csm-bench-archive-"))
    env = csmtest.isolated_env(base)
    os.environ.update(env)
    db = base / "data" / "csm" / "csm.db"
    config = base / "bench.toml"
    config.write_text(f"compress_after_days = {0 if args.compressed else 1000}\n")
    d = csmtest.Csmd(base, ["--root", str(args.corpus), "--config", str(config)]).start(wait=False)
    try:
        d.wait_ready(timeout=900)
        csmtest.wait_for(lambda: csmtest.scalar("SELECT count(*) = 0 FROM search_tools_pending"), 1200,
                         "the deferred tool text")
        if args.compressed:
            csmtest.wait_for(lambda: csmtest.scalar("SELECT count(*) = 0 FROM main.events WHERE zraw IS NULL "
                                                    "AND length(raw) < 1000000"), 1200, "every line compressed")
        time.sleep(3)  # the idle WAL truncation
        session = csmtest.scalar("SELECT session_id FROM sessions WHERE NOT is_subagent ORDER BY lines DESC LIMIT 1")
        result: dict[str, object] = {"load": os.getloadavg(), "session": session, "compressed": args.compressed,
                                     "db": str(db)}
        result["before"] = {**measure(session, args.repeat), **sizes(db)}
        t = time.perf_counter()
        moved = csmtest.run_csm("archive", "--before", "2099-01-01", "--json", timeout=3600)
        assert moved.returncode == 0, moved.stderr
        reply = json.loads(moved.stdout)
        result["archive"] = {"seconds": round(time.perf_counter() - t, 2), "sessions": reply["sessions"],
                             "lines": reply["lines"]}
        time.sleep(3)
        result["after"] = {**measure(session, args.repeat), **sizes(db)}
        result["load_after"] = os.getloadavg()
        print(json.dumps(result, indent=2))
    finally:
        d.stop()
        shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

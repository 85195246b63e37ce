"""Answer times of csmd's everyday queries on a finished archive, and what they leave in csmd's RSS.

    python bench/query_latency.py --corpus /tmp/corpus/c1000 --keep /tmp/lat-c1000 [--repeat 31] [--gap-s 0]

``--keep`` is a folder that keeps the archive between runs (the first run syncs the corpus into it and
waits for the search catch-up), so A/B runs of two trees time the same database. Each round asks
``usage --by day``, ``sessions``, ``search error`` and ``search error --include-tools`` once, in turn,
from this process (no interpreter start-up); ``--gap-s`` waits between rounds (a pause longer than the
pool's idle time makes every round start cold). Prints each query's median and the csmd RSS before the
first round, at the end, and csmd's CPU seconds spent answering.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from csmtest import isolated_env  # noqa: E402
from phases import pending, rss_mb, state, until  # noqa: E402
from run import Csmd, Home  # noqa: E402


def kept_home(base: Path, corpus: Path) -> Home:
    """``base``'s Home, made (with the corpus linked in) if it does not exist yet."""
    if not (base / "main").exists():
        home = Home(base, "main")
        home.projects.rmdir()
        home.projects.symlink_to(corpus.resolve(), target_is_directory=True)
        return home
    home = Home.__new__(Home)
    home.dir = base / "main"
    home.projects = home.dir / "claude" / "projects"
    home.env = isolated_env(home.dir)
    home.run = Path(home.env["XDG_RUNTIME_DIR"])
    home.db = home.dir / "data" / "csm" / "csm.db"
    return home


def main(argv: list[str] | None = None) -> int:
    from csm.client.transport import request
    from csm.shared import protocol as p

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--keep", type=Path, required=True, help="a folder that keeps the archive between runs")
    ap.add_argument("--repeat", type=int, default=31)
    ap.add_argument("--gap-s", type=float, default=0.0)
    a = ap.parse_args(argv)
    home = kept_home(a.keep, a.corpus)
    d = Csmd(home).start()
    sock = Path(home.env["XDG_RUNTIME_DIR"]) / "csm" / "csmd.sock"
    asks = {"usage": p.UsageReport(by="day"), "sessions": p.Sessions(), "search": p.Search(text="error"),
            "search_tools": p.Search(text="error", include_tools=True)}
    times: dict[str, list[float]] = {k: [] for k in asks}
    try:
        until(lambda: home.db.exists() and pending(home.db) == 0 and state(home) == "watching", d, 1800, "the archive")
        time.sleep(2)
        out: dict[str, float] = {"rss_before_mb": round(rss_mb(d.pid), 1)}
        cpu = d.cpu_s()
        for _ in range(a.repeat):
            for name, ask in asks.items():
                t = time.perf_counter()
                request(ask, sock=sock, timeout_s=30.0)
                times[name].append(time.perf_counter() - t)
            time.sleep(a.gap_s)
        out["cpu_s"] = round(d.cpu_s() - cpu, 3)
        time.sleep(2)
        out["rss_after_mb"] = round(rss_mb(d.pid), 1)
        out |= {f"{k}_ms": round(statistics.median(v) * 1000, 2) for k, v in times.items()}
    finally:
        d.stop()
        home.cleanup()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``csm query usage`` computed in this process on an archive, optionally against another version.

    python bench/usage_fold.py DB [--against OLD.py] [--runs 21]
    # e.g. git show main:daemon/reports.py > /tmp/reports_main.py; ... --against /tmp/reports_main.py

Times ``reports.usage`` (``--by day``, UTC) on one read-only connection, median of ``--runs``; with
``--against`` the other module's ``usage`` runs interleaved with it, and both must give the same rows
in 45 cases (five zones, day/week/month, no bound, a ``since`` and an ``until`` that cut a quarter
hour, a project filter). What a client waits for on top of this is the socket and msgpack.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import statistics
import time
from pathlib import Path
from types import ModuleType

from csm.daemon import reports
from csm.daemon.store import open_reader
from csm.shared.protocol import UsageReport

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("reports_other", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wire(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("db", type=Path)
    ap.add_argument("--against", type=Path)
    ap.add_argument("--runs", type=int, default=21)
    a = ap.parse_args()
    conn = open_reader(a.db)
    rows, slots = conn.execute("SELECT count(*), count(DISTINCT slot) FROM usage_slots").fetchone()
    print(f"usage_slots: {rows} rows, {slots} quarter hours")
    versions = {"this": reports.usage}
    if a.against:
        versions["against"] = load(a.against).usage
        lo, hi = conn.execute("SELECT min(ts), max(ts) FROM usage_entries").fetchone()
        cut = wire((lo + hi) // 2 + 123_457)
        cases = [UsageReport(by=by, tz=tz, **bounds) for tz in ZONES for by in ("day", "week", "month")
                 for bounds in ({}, {"since": cut}, {"until": cut, "project": "a"})]
        for c in cases:
            x, y = (f(conn, c, "") for f in versions.values())
            assert x.columns == y.columns and len(x.rows) == len(y.rows), c
            for rx, ry in zip(x.rows, y.rows):
                assert rx[:-2] == ry[:-2] and rx[-1] == ry[-1] and abs((rx[-2] or 0) - (ry[-2] or 0)) < 1e-6, (c, rx, ry)
        print(f"same rows in {len(cases)} cases")
    req = UsageReport(by="day")
    times: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(a.runs):
        for name, f in versions.items():
            t = time.perf_counter()
            f(conn, req, "")
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        print(f"{name}: usage --by day {statistics.median(ts) * 1000:.2f} ms (median of {a.runs})")


if __name__ == "__main__":
    main()

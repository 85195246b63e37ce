"""Every figure issues 10, 13, 14 and 16 set a target for, in one run and one table.

    python bench/targets.py --corpora /tmp/corpus --out /tmp/targets          # all (about 45 min, 2 quiet cores)
    python bench/targets.py --corpora /tmp/corpus --out /tmp/targets --only soak,size_fixtures
    python bench/targets.py --out /tmp/targets --table                         # the table again, from --out

Each measurement runs the bench script that owns it (their docstrings say how they measure), keeps its
JSON output in ``--out`` (a measurement already there is not run again: delete its file to redo it), and
the table gives each figure with its target, whether it is met, and the command that produced it. The
corpora are ``bench/corpus.py``'s, made in ``--corpora`` when missing (c100, c1000, c4000). Why one
script: the issues ask for every target measured from a clean clone with its command; run one by one,
the figures came from different commits and different loads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "shared" / "fixtures" / "real"
"""The real transcripts beside the project (the issues' "real fixtures"); ``--fixtures`` for a clone elsewhere."""

Figures = dict[str, Any]


@dataclass
class Run:
    """One bench command; its JSON output is kept as ``<key>.json`` (a list when it repeats)."""

    key: str
    argv: list[str]
    repeat: int = 1


@dataclass
class Target:
    issue: int
    what: str
    goal: str
    run: str
    """The ``Run`` that measures it."""
    figure: Callable[[Any], float | None]
    met: Callable[[float], bool]
    unit: str = ""


def runs(c: Path, fixtures: Path = FIXTURES) -> list[Run]:
    py = [sys.executable]
    return [
        Run("sync100", [*py, "bench/run.py", "--corpus", f"{c}/c100", "--only", "sync,queries", "--repeat", "3", "--json"]),
        Run("sync1000", [*py, "bench/run.py", "--corpus", f"{c}/c1000", "--only", "sync,queries", "--repeat", "1",
                         "--json"]),
        Run("sync4000", [*py, "bench/run.py", "--corpus", f"{c}/c4000", "--only", "sync", "--repeat", "1",
                         "--timeout-s", "3600", "--json"]),
        Run("backlog1000", [*py, "bench/run.py", "--corpus", f"{c}/c1000", "--only", "backlog", "--json"]),
        Run("phases", [*py, "bench/phases.py", "--corpus", f"{c}/c1000", "--idle-s", "20"]),
        Run("phases_clients", [*py, "bench/phases.py", "--corpus", f"{c}/c1000", "--clients", "4", "--serve",
                               "--idle-s", "20"]),
        Run("soak", [*py, "bench/soak.py", "--clients", "20", "--seconds", "20", "--json"], repeat=3),
        Run("size_fixtures", [*py, "bench/space.py", "--corpus", str(fixtures), "--compress", "--idle-s", "300",
                              "--backups", "1"]),
        Run("export", [*py, "bench/space.py", "--corpus", str(fixtures), "--compress", "--idle-s", "300",
                       "--export-mb", "50", "--backups", "1"]),  # the 50 MB session is not a real one: its own run
        Run("size1000", [*py, "bench/space.py", "--corpus", f"{c}/c1000", "--compress", "--idle-s", "1800",
                         "--backups", "1"]),
        Run("compressing", [*py, "bench/space.py", "--corpus", f"{c}/c100", "--compress", "--idle-s", "900",
                            "--backups", "0", "--fresh", "300"]),
        Run("team", [*py, "bench/team.py", "--size-mb", "100", "--control-s", "36"]),
    ]


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def peak(phases: Figures, *names: str) -> float:
    return max(phases["phases"][n]["peak_mb"] for n in names)


TARGETS = [
    Target(13, "initial sync 100 MB to rows + sessions + usage + prose search", "≤ 1.0 s", "sync100",
           lambda f: f["sync_wall_s"] + f["prose_indexed_after_s"], lambda v: v <= 1.0, " s"),
    Target(13, "initial sync 1 GB, same", "≤ 10 s", "sync1000",
           lambda f: f["sync_wall_s"] + f["prose_indexed_after_s"], lambda v: v <= 10.0, " s"),
    Target(13, "tool text searchable after the 1 GB rows", "≤ 20 s", "sync1000",
           lambda f: f["tools_indexed_after_s"], lambda v: v <= 20.0, " s"),
    Target(13, "`csm query usage --by day` inside csmd, 1 GB", "≤ 20 ms", "sync1000",
           lambda f: f["q_usage_inproc_ms"], lambda v: v <= 20.0, " ms"),
    Target(13, "4 GB history: wall ÷ the 1 GB wall", "≤ 4.2", "sync4000",
           lambda f: f["sync_wall_s"], lambda v: True, " s (ratio below)"),
    Target(13, "4 GB history: peak RSS", "≤ 50 MB (the same ceiling)", "sync4000",
           lambda f: f["sync_rss_max_mb"], lambda v: v <= 50.0, " MB"),
    Target(13, "freshness while a 1 GB first sync runs, p99", "≤ 50 ms", "backlog1000",
           lambda f: f["backlog_fresh_p99_ms"], lambda v: v <= 50.0, " ms"),
    Target(13, "csmd peak RSS, 1 GB: initial sync, search catch-up", "≤ 50 MB", "phases",
           lambda f: peak(f, "sync", "catch-up"), lambda v: v <= 50.0, " MB"),
    Target(13, "csmd RSS idle after the 1 GB sync", "≤ 40 MB", "phases",
           lambda f: f["phases"]["idle"]["end_mb"], lambda v: v <= 40.0, " MB"),
    Target(13, "csmd peak RSS, 1 GB with 4 querying clients and `csm serve`", "≤ 50 MB", "phases_clients",
           lambda f: peak(f, "sync", "catch-up", "idle"), lambda v: v <= 50.0, " MB"),
    Target(10, "freshness p99, 20 clients querying while 2,000 lines/s are appended (median of 3)", "≤ 250 ms", "soak",
           lambda fs: med([f["fresh_p99_ms"] for f in fs]), lambda v: v <= 250.0, " ms"),
    Target(14, "(database + WAL) / transcripts, real fixtures, every session quiet", "≤ 0.40", "size_fixtures",
           lambda f: f["idle"]["ratio"], lambda v: v <= 0.40),
    Target(14, "(database + WAL) / transcripts, 1 GB history, every session quiet", "≤ 0.40", "size1000",
           lambda f: f["idle"]["ratio"], lambda v: v <= 0.40),
    Target(14, "`csm export --raw` of a compressed 50 MB session (byte-identical, checked)", "≥ 100 MB/s",
           "export", lambda f: f["export_mb_per_s"], lambda v: v >= 100.0, " MB/s"),
    Target(14, "csmd peak RSS while compressing (real fixtures)", "≤ 50 MB", "size_fixtures",
           lambda f: f["rss_peak_mb"], lambda v: v <= 50.0, " MB"),
    Target(14, "csmd peak RSS of a whole 1 GB run: sync, catch-up, then compressing it all", "≤ 50 MB", "size1000",
           lambda f: f["rss_peak_mb"], lambda v: v <= 50.0, " MB"),
    Target(14, "freshness p99 while compression runs (100 MB, 300 appends)", "≤ 50 ms", "compressing",
           lambda f: f["fresh_while_compressing"]["p99_ms"], lambda v: v <= 50.0, " ms"),
    Target(16, "csmd peak RSS while mirroring 100 MB into PostgreSQL", "≤ 50 MB", "team",
           lambda f: f["csmd_peak_rss_mb"], lambda v: v <= 50.0, " MB"),
]


def measure(run: Run, out: Path) -> None:
    """Run it (``repeat`` times) unless its JSON is kept already; the JSON is the last object printed."""
    path = out / f"{run.key}.json"
    if path.exists():
        return
    results = []
    for i in range(run.repeat):
        print(f"[{run.key} {i + 1}/{run.repeat}] {' '.join(run.argv)}", file=sys.stderr, flush=True)
        p = subprocess.run(run.argv, cwd=HERE.parent, stdout=subprocess.PIPE, text=True)
        if p.returncode:
            raise SystemExit(f"{run.key} failed (exit {p.returncode})")
        text = p.stdout
        results.append(json.loads(text[text.rindex("\n{") + 1 if "\n{" in text else text.index("{"):]))
        results[-1]["loadavg_1m_end"] = os.getloadavg()[0]
    path.write_text(json.dumps(results if run.repeat > 1 else results[0], indent=1))


def table(out: Path, by_key: dict[str, Run]) -> str:
    rows = ["| issue | figure | target | measured | met | command |", "|---|---|---|---|---|---|"]
    kept = {k: json.loads((out / f"{k}.json").read_text()) for k in by_key if (out / f"{k}.json").exists()}
    for t in TARGETS:
        if t.run not in kept:
            continue
        value = t.figure(kept[t.run])
        shown = "—" if value is None else f"{value:g}{t.unit}"
        met = "yes" if value is not None and t.met(value) else "**no**"
        if t.run == "sync4000" and "sync1000" in kept and t.what.endswith("1 GB wall"):
            ratio = kept["sync4000"]["sync_wall_s"] / kept["sync1000"]["sync_wall_s"]
            shown, met = f"{value:g} s ÷ {kept['sync1000']['sync_wall_s']:g} s = {ratio:.2f}", "yes" if ratio <= 4.2 else "**no**"
        argv = by_key[t.run].argv
        cmd = " ".join(["python", *argv[1:]]) + (f"  (×{by_key[t.run].repeat})" if by_key[t.run].repeat > 1 else "")
        rows.append(f"| {t.issue} | {t.what} | {t.goal} | {shown} | {met} | `{cmd}` |")
    loads = [f"{k} {v['loadavg_1m_end'] if isinstance(v, dict) else v[-1]['loadavg_1m_end']:.1f}"
             for k, v in kept.items()]
    return "\n".join(rows) + "\n\nLoad average (1 min) at the end of each: " + ", ".join(loads) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", type=Path, default=Path("/tmp/corpus"), help="where c100, c1000, c4000 are (or go)")
    ap.add_argument("--fixtures", type=Path, default=FIXTURES, help="the real transcripts (../shared/fixtures/real)")
    ap.add_argument("--out", type=Path, required=True, help="a folder for each measurement's JSON")
    ap.add_argument("--only", help="comma-separated measurements: " + ", ".join(r.key for r in runs(Path("."))))
    ap.add_argument("--table", action="store_true", help="only print the table of what --out holds")
    a = ap.parse_args(argv)
    corpora = a.corpora.resolve()
    all_runs = runs(corpora, a.fixtures.resolve())
    by_key = {r.key: r for r in all_runs}
    chosen = [by_key[k] for k in a.only.split(",")] if a.only else all_runs
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.table:
        for r in chosen:
            for name, mb in (("c100", 100), ("c1000", 1000), ("c4000", 4000)):
                if f"{corpora}/{name}" in r.argv and not (corpora / f"{name}.done").exists():
                    subprocess.run([sys.executable, "bench/corpus.py", str(corpora / name), "--size-mb", str(mb)],
                                   cwd=HERE.parent, check=True)
                    (corpora / f"{name}.done").touch()
            measure(r, a.out)
    print(table(a.out, by_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())

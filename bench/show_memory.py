"""csmd's memory while it shows one big session whole, as a page past its end, and as an export.

    pip install -e . && python bench/show_memory.py --corpus /tmp/corpus/c100 --mb 50 [--runs 3]

Writes one session of ``--mb`` MB made of the corpus's lines (``space.write_session``) into a
temporary home, lets a real csmd sync it, then runs each operation ``--runs`` times: ``csm query show
big-session --full --json``, the web Session page's request for the last page (``Show`` with
``limit=200`` and an offset past the end) and ``csm export big-session --format html``. Before each
run csmd's peak RSS is reset (``/proc/<pid>/clear_refs``), so each prints csmd's RSS before, its peak
during the run and its RSS once the run is over, and the run's seconds (medians over the runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Csmd, Home, csm, csm_cmd, median, wait_scanned  # noqa: E402
from space import write_session  # noqa: E402

LAST_PAGE = ("from csm.client.transport import request; from csm.shared import protocol; "
             "t = request(protocol.Show(session='big-session', full=True, offset=10**9, limit=200), timeout_s=120); "
             "print(t.offset, t.total, len(t.entries))")


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(d: Csmd, home: Home, cmd: list[str]) -> dict[str, float]:
    """One run of ``cmd``: csmd's RSS before, its peak during (reset first), its RSS after, the seconds."""
    Path(f"/proc/{d.pid}/clear_refs").write_text("5")
    before = vm(d.pid, "VmRSS")
    t = time.perf_counter()
    r = subprocess.run(cmd, env=home.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()}")
    return {"before_mb": before, "peak_mb": vm(d.pid, "VmHWM"), "after_mb": vm(d.pid, "VmRSS"), "s": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True, help="a folder of transcripts whose lines make the session")
    ap.add_argument("--mb", type=float, default=50.0, help="the session's size")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="csm-show-"))
    home = Home(base, "h")
    try:
        write_session(home.projects / "p" / "big-session.jsonl", args.mb, args.corpus)
        d = Csmd(home).start()
        try:
            wait_scanned(home, d)
            csm(home, "sync", "--now")
            print(json.dumps({"csmd_after_sync_mb": round(vm(d.pid, "VmRSS"), 1), "peak_mb": round(d.peak_rss_mb(), 1)}))
            ops = {"show --full --json": [*csm_cmd(), "query", "show", "big-session", "--full", "--json"],
                   "last web page": [sys.executable, "-c", LAST_PAGE],
                   "export --format html": [*csm_cmd(), "export", "big-session", "--format", "html"]}
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in ops}
            for _ in range(args.runs):  # the operations alternate
                for name, cmd in ops.items():
                    runs[name].append(measure(d, home, cmd))
            for name, rs in runs.items():
                print(json.dumps({"op": name, "session_mb": args.mb, "runs": len(rs),
                                  **{k: round(median([r[k] for r in rs]), 1) for k in rs[0]}}))
        finally:
            d.stop()
    finally:
        home.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What file identity adds to an initial sync: the per-new-file lookups of ``Store``.

Every path without its checkpoint asks the inode index for a checkpoint to claim (once in the
rescan's claim pass, once when visited) and the path index for a gone checkpoint there. Timed
in-process on a real SQLite file with ``--files`` checkpoints, so the figure is the lookups' own
cost, free of the noise of a whole csmd run on a loaded machine.

    python bench/identity_lookups.py --files 3000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from csm.daemon.store import FileRow, Store, open_writer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        store = Store(open_writer(Path(t) / "csm.db"))
        with store.transaction():
            for i in range(a.files):
                store.save_file(FileRow(file_id=i + 1, path=f"/r/p/s{i}.jsonl", root="/r", project="p",
                                        session_key=f"s{i}", parent_session=None, dev=1, inode=1000 + i, size=0,
                                        mtime_ns=0, offset=0), "then")
        runs = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            for i in range(a.files):  # new files: no checkpoint on their inode or at their path
                store.with_inode(1, 10**7 + i)
                store.gone_at_path(f"/r/p/new{i}.jsonl")
                store.with_inode(1, 10**7 + i)
            runs.append(time.perf_counter() - t0)
        store.close()
    med = statistics.median(runs)
    print(f"{a.files} new files: identity lookups {med:.3f} s median of {a.repeat} "
          f"({med / a.files * 1e6:.0f} µs a file; runs {', '.join(f'{r:.3f}' for r in runs)})")


if __name__ == "__main__":
    main()

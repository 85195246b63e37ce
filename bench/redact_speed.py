"""What ``csm export --redact`` costs: CPU per MB of raw lines redacted, against the export alone.

    python bench/redact_speed.py [DIR] [--repeat N]    # DIR: transcripts (default tests/fixtures/real)

Runs the client's own code in-process on every ``*.jsonl`` under DIR (the lines csmd would export),
N rounds interleaved with a plain copy of the same lines, and prints the median CPU seconds and MB/s,
and what was replaced by kind (every replacement in real transcripts should be a home path).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

from csm.client.export import RedactedLines
from csm.client.redact import Redactor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default=str(Path(__file__).parents[1] / "tests" / "fixtures" / "real"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    files = [p.read_bytes() for p in sorted(Path(args.dir).rglob("*.jsonl"))]
    size = sum(map(len, files)) / 1e6
    redacted, plain, counts = [], [], {}
    for _ in range(args.repeat):
        t = time.process_time()
        for data in files:
            io.BytesIO().write(data)
        plain.append(time.process_time() - t)
        r = Redactor(home="/nonexistent-home")
        t = time.process_time()
        for data in files:
            lines = RedactedLines(io.BytesIO(), r)
            for i in range(0, len(data), 1 << 20):  # csmd's chunks, cut anywhere
                lines.write(data[i:i + (1 << 20)])
            lines.close()
        redacted.append(time.process_time() - t)
        counts = dict(r.counts)
    med = statistics.median(redacted)
    print(f"{size:.1f} MB in {len(files)} files; redact median {med:.2f} s CPU ({size / med:.1f} MB/s), "
          f"max {max(redacted):.2f} s; plain copy median {statistics.median(plain) * 1000:.1f} ms; replaced {counts}")


if __name__ == "__main__":
    main()

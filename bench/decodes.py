"""How many times the ingest path decodes JSON, per line: the one-decode rule, counted.

    python bench/decodes.py [--size 20] [--watch]

Ingests a ``--size`` MB corpus (``bench/corpus.py``) in this process with csmd's sinks (usage,
search with the tool text deferred, as during an initial sync) and, with ``--watch``, a ``csm watch``
subscriber that wants every file. cProfile counts every msgspec decode (typed and generic decoders,
``msgspec.json.decode``, ``msgspec.convert``); the figure is decodes per stored line. The subscriber's socket is replaced by a list (``_Server``): the bench
counts decodes, not delivery. Run it against another checkout by putting that checkout's
``csm`` package first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import write_corpus  # noqa: E402

from csm.daemon import search  # noqa: E402
from csm.daemon.ingest import Ingestor  # noqa: E402
from csm.daemon.prices import PriceTable  # noqa: E402
from csm.daemon.store import Store, open_writer  # noqa: E402
from csm.daemon.usage import UsageSink  # noqa: E402
from csm.daemon.watch import Watchers  # noqa: E402
from csm.shared.config import Config  # noqa: E402

DECODES = ("'decode' of 'msgspec", "msgspec._core.json_decode", "msgspec._core.convert")


class _Server:
    """What ``Watchers`` needs of the server: ``post`` only queues anyway."""

    def __init__(self) -> None:
        self.dropped: list[Any] = []
        self.posted = 0

    def post(self, envelope: Any, msg: Any) -> None:
        self.posted += 1

    def post_encoded(self, envelope: Any, data: bytes) -> None:
        self.posted += 1


def run(root: Path, watch: bool) -> tuple[int, int, float]:
    with tempfile.TemporaryDirectory() as t:
        store = Store(open_writer(Path(t) / "csm.db"))
        ing = Ingestor(store, [root], Config())
        sinks = [UsageSink(PriceTable.shipped()), search.SearchIndex(defer=lambda: True)]
        watchers = Watchers(_Server())  # type: ignore[arg-type]
        if watch:
            (watchers.subscribe if hasattr(watchers, "subscribe") else watchers.add)((b"peer",), None, None)
        if hasattr(ing, "on_commit"):  # the code before the sinks' lifecycle
            ing.sinks += sinks
            ing.on_commit.append(watchers.on_commit)
        else:
            ing.sinks += [*sinks, watchers]
        prof = cProfile.Profile()
        cpu = time.process_time()
        prof.enable()
        totals = ing.rescan()
        prof.disable()
        cpu = time.process_time() - cpu
        store.close()
    stats = pstats.Stats(prof)
    decodes = sum(v[1] for k, v in stats.stats.items() if any(d in k[2] for d in DECODES))  # type: ignore[attr-defined]
    return totals.lines, decodes, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=20)
    ap.add_argument("--watch", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        write_corpus(Path(t), a.size)
        lines, decodes, cpu = run(Path(t) / "projects" if (Path(t) / "projects").is_dir() else Path(t), a.watch)
    print(f"{lines} lines, {decodes} decodes ({decodes / lines:.2f} a line), {cpu:.2f} s CPU under cProfile"
          f"{' with a watch subscriber' if a.watch else ''}")


if __name__ == "__main__":
    main()

"""Where a process's resident memory is, from ``/proc/<pid>/smaps``: each library's pages, the heap, and
the anonymous mappings (glibc's per-thread arenas are 64 MB reservations, mostly untouched; thread
stacks are 8 MB ones; large blocks are mmapped on their own).

    python bench/smaps.py PID
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

ARENA_KB = 64 * 1024
"""glibc reserves each non-main arena as one 64 MB heap (HEAP_MAX_SIZE on 64-bit), in two mappings."""
STACK_KB = (8188, 8192, 8196)
"""A thread's 8 MB stack, less or plus its guard page."""


def read(pid: int) -> list[dict[str, object]]:
    """Every mapping: its name (``[anon]`` for none), size and resident kB, anonymous kB."""
    maps: list[dict[str, object]] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            maps.append({"name": head[5] if len(head) > 5 else "[anon]", "size": (hi - lo) // 1024, "perms": head[1]})
        elif head[0] in ("Rss:", "Anonymous:"):
            maps[-1][head[0][:-1].lower()] = int(head[1])
    return maps


def summary(maps: list[dict[str, object]]) -> dict[str, float]:
    """Resident MB by kind: each file (its pages, anonymous or not), the main heap, arenas (an
    anonymous span whose neighbours add up to a 64 MB reservation is counted as one), stacks and the rest."""
    out: dict[str, float] = defaultdict(float)
    anon = [m for m in maps if m["name"] == "[anon]"]
    for m in maps:
        if m["name"] != "[anon]":
            out[str(m["name"])] += int(m.get("rss", 0)) / 1024  # type: ignore[arg-type]
    # Pair each arena's used part (rw) with its reserved rest (---): together 64 MB.
    i = 0
    while i < len(anon):
        m = anon[i]
        rss = int(m.get("rss", 0)) / 1024  # type: ignore[arg-type]
        nxt = anon[i + 1] if i + 1 < len(anon) else None
        if nxt is not None and int(m["size"]) + int(nxt["size"]) == ARENA_KB:  # type: ignore[arg-type]
            out["[arenas]"] += rss + int(nxt.get("rss", 0)) / 1024  # type: ignore[arg-type]
            out["#arenas"] += 1
            i += 2
            continue
        if int(m["size"]) in STACK_KB:  # type: ignore[arg-type]
            out["[stacks]"] += rss
        else:
            out["[anon other]"] += rss
        i += 1
    return dict(out)


def main() -> None:
    s = summary(read(int(sys.argv[1])))
    for k, v in sorted(s.items(), key=lambda kv: -kv[1]):
        if v >= 0.1:
            print(f"{v:8.2f}  {k}")


if __name__ == "__main__":
    main()

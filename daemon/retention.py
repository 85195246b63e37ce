"""What Claude Code's cleanup means for this archive: its retention setting, and what it deleted
before csm could archive it.

Claude Code deletes a transcript once its last write is ``cleanupPeriodDays`` old (default 30,
from ``settings.json`` in its config dir). ``history.jsonl`` beside it, one line per prompt typed
(``timestamp``, ``project``, ``sessionId`` since 1.0.x), is never swept. So after csmd's first
rescan, when every transcript still on disk is archived, a prompt older than the period whose
session the archive never held (or, on lines without ``sessionId``, older than anything the
archive holds) was in a transcript deleted before csm saw it: lost before csm was installed (or
while csmd was not running). Recent prompts are left out: their transcript may sit in a root
csm does not watch, or not be written yet. ``.last-cleanup`` is not used: it proves a sweep ran,
not that it deleted anything.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from csm.daemon.sinks import Sink
from csm.shared.protocol import LostBefore

if TYPE_CHECKING:
    from csm.daemon.store import Store

log = logging.getLogger("csm.daemon")

DEFAULT_DAYS = 30
DAY_S = 86_400.0


def cleanup_period(config_dirs: list[Path]) -> tuple[int, str]:
    """Days Claude Code keeps transcripts and where that comes from (a settings.json, or "default").

    With several config dirs the shortest period wins: it is the one that deletes soonest. A file
    that cannot be read or has no usable number leaves the default for that dir.
    """
    found: list[tuple[int, str]] = []
    for d in config_dirs:
        path = d / "settings.json"
        try:
            days = json.loads(path.read_bytes()).get("cleanupPeriodDays")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(days, (int, float)) and not isinstance(days, bool) and days >= 0:
            found.append((int(days), str(path)))
    return min(found) if found else (DEFAULT_DAYS, "default")


def _seconds(ts: object) -> float | None:
    """history.jsonl's ``timestamp``: epoch milliseconds (as Claude Code writes it) or an ISO string."""
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return ts / 1000.0
    if isinstance(ts, str):
        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def lost_before(conn: sqlite3.Connection, config_dirs: list[Path], period_days: int,
                now: float | None = None) -> LostBefore:
    """Sessions and prompts ``history.jsonl`` names that Claude Code deleted before csm archived them."""
    cutoff = (time.time() if now is None else now) - period_days * DAY_S
    known = {r[0] for r in conn.execute("SELECT DISTINCT session_id FROM session_stats")}
    oldest_row = conn.execute("SELECT min(first_ts) FROM session_stats").fetchone()[0]
    oldest = _seconds(oldest_row) if oldest_row else None
    sessions: set[str] = set()
    prompts, first, last = 0, float("inf"), 0.0
    for d in config_dirs:
        try:
            f = open(d / "history.jsonl", "rb")
        except OSError:
            continue
        with f:  # line by line: the history of years of prompts is never held whole (csmd stays small)
            for raw in f:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                ts = _seconds(entry.get("timestamp")) if isinstance(entry, dict) else None
                if ts is None or ts >= cutoff:
                    continue
                sid = entry.get("sessionId")
                if isinstance(sid, str) and sid:
                    if sid in known:
                        continue
                    sessions.add(sid)
                elif oldest is not None and ts >= oldest:
                    continue
                prompts += 1
                first, last = min(first, ts), max(last, ts)
    if not prompts:
        return LostBefore(sessions=0, prompts=0)
    return LostBefore(sessions=len(sessions), prompts=prompts, first=_iso(first), last=_iso(last))


class Retention(Sink):
    """The setting, read when asked (it may change), and the loss, found once after csmd's first rescan
    (an idle step of the ingest thread: ``rescanned`` says whether a rescan has archived every file)."""

    name = "retention"

    def __init__(self, roots: list[Path], rescanned: Callable[[], bool] = lambda: True) -> None:
        from csm.shared.paths import claude_config_dirs

        self.rescanned = rescanned
        self.dirs = claude_config_dirs(roots)
        self.lost: LostBefore | None = None
        self.checked = False
        self.failed = False

    def period(self) -> tuple[int, str]:
        return cleanup_period(self.dirs)

    def idle(self, store: Store, stop: Callable[[], bool]) -> None:
        self.check(store.conn, rescanned=self.rescanned())

    def check(self, conn: sqlite3.Connection, rescanned: bool) -> None:
        """On the ingest thread, after work; once, and only after the first rescan has archived every file.

        A finding, never a reason to stop: a database error here (damage ``health`` reports, a lock) is
        logged once and the check is tried again after the next work, never raised into ingestion.
        """
        if self.checked or not rescanned:
            return
        days, _ = self.period()
        try:
            lost = lost_before(conn, self.dirs, days)
        except (sqlite3.Error, OSError) as e:
            if not self.failed:
                log.warning("cannot compare Claude Code's history.jsonl with the archive (%s); trying again later", e)
            self.failed = True
            return
        self.checked = True
        self.lost = lost
        if lost.prompts and lost.first and lost.last:
            log.warning("Claude Code deleted %d sessions (%d prompts typed %s to %s, in history.jsonl) before csm "
                        "archived them; csm keeps everything from now on", lost.sessions, lost.prompts,
                        lost.first[:10], lost.last[:10])

"""``csm status --format prometheus``: csmd's figures in Prometheus' text format, for node_exporter's
textfile collector, so csm is monitored without opening a port.

A cron job or systemd timer writes them where the collector reads (README, "Monitoring"); csmd
not running is a figure too (``csm_up 0``), so an alert can fire on it.
"""

from __future__ import annotations

import calendar
import time

from csm.shared.protocol import StatusReply

_METRICS: list[tuple[str, str, str]] = [
    ("csm_up", "gauge", "1 when csmd answered csm status, 0 when it is not running."),
    ("csm_uptime_seconds", "gauge", "Seconds since csmd started."),
    ("csm_watching", "gauge", "1 when csmd watches the roots, 0 when it polls (inotify limits) or has stopped."),
    ("csm_watcher_restarts_total", "counter", "Times the watcher was restarted since csmd started."),
    ("csm_files", "gauge", "Transcript files csmd follows."),
    ("csm_files_gone", "gauge", "Transcript files deleted or moved away whose rows csm keeps."),
    ("csm_sessions", "gauge", "Sessions in the archive."),
    ("csm_sessions_gone", "gauge", "Sessions whose transcript is gone: the archive alone holds them."),
    ("csm_lines", "gauge", "Transcript lines ingested by this csmd."),
    ("csm_commits_total", "counter", "Write transactions csmd committed since it started (one per round of appends)."),
    ("csm_bad_lines", "gauge", "Lines that are not JSON objects, recorded and skipped (csm query errors)."),
    ("csm_last_sync_timestamp_seconds", "gauge", "When the last rescan finished (Unix time)."),
    ("csm_backlog_bytes", "gauge", "Bytes still to ingest in the current backlog (0 when there is none)."),
    ("csm_error", "gauge", "1 when ingestion is failing (backing off), else 0."),
    ("csm_db_problem", "gauge", "1 when the database is damaged, deleted or replaced under csmd, else 0."),
    ("csm_cleanup_period_days", "gauge", "Claude Code's cleanupPeriodDays: transcripts older are deleted."),
    ("csm_sessions_lost_before_csm", "gauge",
     "Sessions history.jsonl names whose transcripts Claude Code deleted before csm archived them "
     "(absent until csmd's first rescan has ended)."),
]


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return float(calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")))


def values(r: StatusReply | None) -> dict[str, float | None]:
    """Each metric's value (None: not known, left out); ``r`` None when csmd is not running."""
    if r is None:
        return {"csm_up": 0}
    b = r.backlog
    return {
        "csm_up": 1, "csm_uptime_seconds": r.uptime_s, "csm_watching": int(r.watch_mode == "watching"),
        "csm_watcher_restarts_total": r.watcher_restarts, "csm_files": r.files, "csm_files_gone": r.files_gone,
        "csm_sessions": r.sessions, "csm_sessions_gone": r.sessions_gone, "csm_lines": r.events,
        "csm_commits_total": r.commits,
        "csm_bad_lines": r.errors, "csm_last_sync_timestamp_seconds": _epoch(r.last_sync_at),
        "csm_backlog_bytes": max(b.bytes_total - b.bytes_done, 0) if b else 0,
        "csm_error": int(bool(r.last_error)), "csm_db_problem": int(bool(r.db_problem)),
        "csm_cleanup_period_days": r.cleanup_period_days,
        "csm_sessions_lost_before_csm": r.lost_before_csm.sessions if r.lost_before_csm else None,
    }


def exposition(r: StatusReply | None) -> str:
    """The text exposition format (version 0.0.4): HELP, TYPE and one sample per metric."""
    v = values(r)
    out = []
    if r is not None:
        out += ["# HELP csm_info The csmd version answering.", "# TYPE csm_info gauge",
                f'csm_info{{version="{r.version}"}} 1']
    for name, kind, help_ in _METRICS:
        value = v.get(name)
        if value is None:
            continue
        text = str(int(value)) if float(value).is_integer() else repr(float(value))
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {text}"]
    return "\n".join(out) + "\n"

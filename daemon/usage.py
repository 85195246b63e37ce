"""Token accounting: every API response counted once, kept current by the writer.

Claude Code writes one response as several lines (one per content block) that share
``message.id`` and ``requestId`` and repeat the usage, only the last line's
``output_tokens`` being final; a resumed session copies earlier lines into its new file;
a subagent's responses are in its own file and embedded again in the parent's
``progress`` lines (``data.message``), and sometimes only there. So:

1. usage comes from ``assistant`` lines and from messages embedded in ``progress`` lines;
2. copies share a key: ``message.id`` + ``requestId`` (``message.id`` alone without a
   ``requestId``; a response without ``message.id`` cannot be matched and counts alone);
3. of the copies, the row keeps the best: a non-sidechain copy first, then the largest
   total (input + output + cache writes + cache reads), then one with ``usage.speed``.

The totals do not depend on which file is read first (of equal copies, the one stored
first keeps its session). ``usage_entries`` holds one row per key; the
triggers of migration 2 (``M002_USAGE``) keep ``usage_slots`` (quarter-hour sums) in step.

A token count must be an integer from 0 to ``TOKENS_MAX``. JSON allows any integer, SQLite holds
64 bits, and the sums (a row's total, a quarter hour's, a session's) must stay exact, not turn
into floating point or fail: a count outside that range is an error of its line's usage
(``UsageError``; the line itself is stored), and the line counts for nothing.
"""

from __future__ import annotations

import datetime
from typing import Any

from csm.daemon.batch import EventRow
from csm.daemon.parse import LineView, MessageView
from csm.daemon.prices import PriceTable, Tokens
from csm.daemon.sinks import Sink
from csm.daemon.store import FileRow, Store

_COLUMNS = (
    "key", "message_id", "request_id", "event_id", "session_id", "project", "ts", "timestamp", "model",
    "input_tokens", "output_tokens", "cache_creation_tokens", "cache_creation_5m_tokens",
    "cache_creation_1h_tokens", "cache_read_tokens", "speed", "sidechain", "embedded", "cost_usd",
)
_TOTAL = "input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens"
INSERT = (f"INSERT INTO usage_entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
          "ON CONFLICT(key) DO NOTHING")
DELETE_WORSE = (f"DELETE FROM usage_entries WHERE key = ? AND (1 - sidechain, {_TOTAL}, speed IS NOT NULL) "
                "< (?, ?, ?)")
"""A better copy replaces a row as a delete and an insert, so the triggers that keep
``usage_slots`` only ever add or take away a whole row."""
REBUILD_SLOTS = f"""
DELETE FROM usage_slots;
INSERT INTO usage_slots
SELECT ts / 900000, project, session_id, COALESCE(model, ''), count(*), sum(input_tokens), sum(output_tokens),
       sum(cache_creation_tokens), sum(cache_read_tokens), sum(COALESCE(cost_usd, 0)),
       sum(CASE WHEN cost_usd IS NULL THEN {_TOTAL} ELSE 0 END)
FROM usage_entries GROUP BY 1, 2, 3, 4;
"""
# Positions in a row (see _COLUMNS).
_TS, _TIMESTAMP, _MODEL, _IN, _OUT, _CC, _CC5M, _CC1H, _CR, _SPEED, _SIDE = range(6, 17)
_COST = 18


TOKENS_MAX = (1 << 32) - 1
"""Thousands of times any model's context window, and small enough that 2^29 responses at the
maximum still sum within SQLite's 64-bit integers."""


class UsageError(ValueError):
    """A response's usage that csm cannot count (a token count out of range); ``str`` says which."""


def _count(name: str, n: int | None) -> int:
    if n is None:
        return 0
    if not 0 <= n <= TOKENS_MAX:
        raise UsageError(f"{name} {n} is not a token count csm can sum (0 to {TOKENS_MAX})")
    return n


def _rank(row: list[Any]) -> tuple[int, int, bool]:
    return (1 - row[_SIDE], row[_IN] + row[_OUT] + row[_CC] + row[_CR], row[_SPEED] is not None)


def epoch_ms(timestamp: str | None) -> int | None:
    """Milliseconds since the epoch of an ISO-8601 time (UTC when it names no offset)."""
    if not timestamp:
        return None
    try:
        t = datetime.datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return int(t.timestamp() * 1000)


class UsageSink(Sink):
    """The sink that keeps ``usage_entries`` current."""

    name = "usage"

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self.pending: dict[str, list[Any]] = {}

    def prepare(self, store: Store) -> None:
        """Recompute stored costs (and their sums) if the price table changed since they were computed."""
        conn = store.conn
        row = conn.execute("SELECT value FROM usage_meta WHERE name = 'prices'").fetchone()
        if row is not None and row[0] == self.prices.fingerprint:
            return
        with store.transaction():
            updates = []
            for key, model, i, o, c5, c1, cc, cr, speed, cost in conn.execute(
                "SELECT key, model, input_tokens, output_tokens, cache_creation_5m_tokens, "
                "cache_creation_1h_tokens, cache_creation_tokens, cache_read_tokens, speed, cost_usd "
                "FROM usage_entries"
            ):
                one_hour = c1 or 0
                new = self.prices.cost(model, Tokens(i, o, cc - one_hour if c5 is None else c5, one_hour, cr, speed))
                if new != cost:
                    updates.append((new, key))
            conn.executemany("UPDATE usage_entries SET cost_usd = ? WHERE key = ?", updates)
            for statement in REBUILD_SLOTS.split(";")[:-1]:
                conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO usage_meta VALUES ('prices', ?)", (self.prices.fingerprint,))

    def add(self, row: EventRow, f: FileRow, view: LineView) -> None:
        """Keep the line's response if it is the best copy of its key seen in this batch.

        The hot path: what only the kept copies need (time, cost) waits for ``write``.
        """
        kind = view.type
        if kind == "assistant":
            msg: MessageView | None = view.message
            if msg is None or msg.usage is None:
                return
            request_id, sidechain, timestamp, embedded = view.request_id, view.is_sidechain, view.timestamp, 0
        elif kind == "progress":
            e = view.embedded
            if e is None:
                return
            msg = e.message
            request_id, sidechain, timestamp, embedded = e.request_id, e.is_sidechain, e.timestamp or view.timestamp, 1
        else:
            return
        assert msg is not None and msg.usage is not None
        u = msg.usage
        if msg.id:
            key = f"{msg.id} {request_id}" if request_id else msg.id
        else:
            key = f"line {row.id}"
        cc = _count("cache_creation_input_tokens", u.cache_creation_input_tokens)
        split = u.cache_creation
        one_hour = _count("ephemeral_1h_input_tokens", split.ephemeral_1h_input_tokens) if split else 0
        row = [
            key, msg.id, request_id, row.id, f.session_key, f.project, None, timestamp, msg.model,
            _count("input_tokens", u.input_tokens), _count("output_tokens", u.output_tokens), cc,
            max(cc - one_hour, 0) if split else None, one_hour if split else None,
            _count("cache_read_input_tokens", u.cache_read_input_tokens), u.speed, int(bool(sidechain)), embedded,
            None,
        ]
        old = self.pending.get(key)
        if old is None or _rank(row) > _rank(old):
            self.pending[key] = row

    def write(self, store: Store) -> None:
        rows = []
        for row in self.pending.values():
            ts = epoch_ms(row[_TIMESTAMP])
            if ts is None:
                continue  # a response that cannot be placed in time is left out of the usage
            five_min = row[_CC] if row[_CC5M] is None else row[_CC5M]
            row[_TS] = ts
            row[_COST] = self.prices.cost(row[_MODEL], Tokens(row[_IN], row[_OUT], five_min, row[_CC1H] or 0,
                                                              row[_CR], row[_SPEED]))
            rows.append(row)
        if rows:
            store.conn.executemany(DELETE_WORSE, [(r[0], *_rank(r)) for r in rows])
            store.conn.executemany(INSERT, rows)

    def clear(self) -> None:
        self.pending = {}

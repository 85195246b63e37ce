"""A batch: what one transaction stores, made from a file's bytes by a pure function (``collect``).

``collect`` touches no file, database or sink: given a checkpoint, the complete lines read after it
and an earlier generation's rows to re-attach, it returns the new rows with their views, the
re-attached rows, the bad lines, the session figures and what could not be derived. The ingest
thread then hands the views to the sinks and writes the whole batch with its checkpoint in one
transaction (``Store.write_batch``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from csm.daemon import reader
from csm.daemon.parse import BadLine, LineView, is_synthetic, parse, prompt_text
from csm.daemon.store import FileRow
from csm.daemon.tree import is_agent_key, is_subagent

log = logging.getLogger("csm.ingest")

ERROR_HEAD = 200
MESSAGE_TYPES = frozenset({"user", "assistant"})


class EventRow(NamedTuple):
    """A new ``events`` row; its id is the writer's (see ``Store.insert_events``)."""

    id: int
    file_id: int
    generation: int
    line_offset: int
    session_id: str | None
    uuid: str | None
    parent_uuid: str | None
    type: str | None
    timestamp: str | None
    raw: str | bytes
    """The line as text, or, for a line over the batch size, its UTF-8 bytes (``text``)."""


class BadLineRow(NamedTuple):
    """A ``sync_errors`` row: a line that cannot be stored (or, at offset -1, a file that cannot be read)."""

    file_id: int
    file_path: str
    generation: int
    line_offset: int
    length: int
    error: str
    head: bytes


class Move(NamedTuple):
    """An unchanged row (or bad line) found again by a re-read, at a new generation and offset."""

    generation: int
    line_offset: int
    id: int


class LineError(NamedTuple):
    """A stored line whose derived ``part`` (usage, search, sessions, view, all) could not be made."""

    event_id: int
    part: str
    error: str


@dataclass
class SessionAgg:
    """One batch's contribution to one session's figures."""

    project: str
    parent: str | None
    is_subagent: bool
    cwd: str | None = None
    first_ts: str | None = None
    last_ts: str | None = None
    lines: int = 0
    messages: int = 0
    custom_title: str | None = None
    ai_title: str | None = None
    summary: str | None = None
    first_prompt: str | None = None
    models: set[str] = field(default_factory=set)

    def add(self, v: LineView, counted: bool) -> None:
        ts = v.timestamp
        if ts:
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
        if v.cwd:
            self.cwd = v.cwd
        if counted:
            self.lines += 1
            if v.type in MESSAGE_TYPES and not v.is_meta:
                self.messages += 1
        if v.custom_title:
            self.custom_title = v.custom_title
        if v.ai_title:
            self.ai_title = v.ai_title
        if v.summary and v.type == "summary":
            self.summary = v.summary
        if v.type == "assistant" and v.message is not None and not is_synthetic(v.message.model):
            self.models.add(v.message.model)  # type: ignore[arg-type]


@dataclass
class Reread:
    """An earlier generation's rows and bad lines, by content, for a re-read to find again."""

    rows: dict[bytes, list[int]]
    errors: dict[tuple[int, bytes], list[int]]


@dataclass
class Batch:
    """What one transaction stores: new rows (each with its view, or None when nothing is derived from
    it), re-attached rows, bad lines, the session's figures, line errors, and where the checkpoint goes."""

    start: int
    end: int
    parent_session: str | None
    rows: list[EventRow] = field(default_factory=list)
    views: list[LineView | None] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    errors: list[BadLineRow] = field(default_factory=list)
    error_moves: list[Move] = field(default_factory=list)
    line_errors: list[LineError] = field(default_factory=list)
    agg: SessionAgg | None = None
    taken: list[tuple[dict[Any, list[int]], Any, int]] = field(default_factory=list)
    """Rows and bad lines taken from a re-read's pool, given back if the transaction fails."""

    def give_back(self) -> None:
        for pool, key, row_id in reversed(self.taken):
            pool.setdefault(key, []).append(row_id)
        self.taken.clear()

    def new_lines(self) -> list[tuple[EventRow, LineView]]:
        """The new rows with their views, for the sinks and the commit hooks; rows with nothing derived left out."""
        return [(r, v) for r, v in zip(self.rows, self.views) if v is not None]


def _row(values: tuple[Any, ...]) -> EventRow:
    """An ``EventRow`` without the Python-level ``__new__`` a NamedTuple call costs (once per line)."""
    return tuple.__new__(EventRow, values)  # type: ignore[type-var]


def error_text(e: Exception) -> str:
    """A derived-data failure as recorded: a sink's own error (``UsageError``) says it all; a bug names its type."""
    return str(e) if isinstance(e, ValueError) and str(e) else f"{type(e).__name__}: {e}"


def _why(e: UnicodeDecodeError | BadLine | reader.LineTooLong) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"invalid UTF-8: {e.reason} at byte {e.start}"
    return str(e)


def text(line: bytes, long: int) -> str | bytes:
    """The line as ``raw`` is bound, checked as UTF-8: its str, or for a line over ``long`` bytes the
    bytes themselves (``Store.insert_events`` stores them unchanged as TEXT): the str of a long
    line would be one more copy of it (two to four for text beyond Latin-1, and its UTF-8 form)."""
    decoded = line.decode("utf-8")
    return line if len(line) > long else decoded


def _after_nuls(line: bytes) -> tuple[int, bytes, str, LineView] | None:
    """The record after a run of NUL bytes, if one is there: (NULs cut, record, its text, view).

    A crash on ext4 can leave the unflushed end of a file as NUL bytes, and Claude Code's next
    append then lands on the same line after them; the record is intact and is kept.
    """
    cut = line.rfind(b"\0") + 1
    if not cut or cut == len(line):
        return None
    rest = line[cut:]
    try:
        return cut, rest, rest.decode("utf-8"), parse(rest)
    except (UnicodeDecodeError, BadLine):
        return None


def collect(
    f: FileRow, start: int, lines: list[bytes], *, next_id: int, max_line: int, long_line: int,
    reattach: Reread | None = None,
    want_prompt: bool = False, too_long: tuple[int, bytes] | None = None, unterminated: bool = False,
    failed: str | None = None,
) -> Batch:
    """The batch of ``lines`` (complete lines without their newline, the first at ``start``).

    ``next_id``: the id of the first new row. ``long_line``: a longer line is stored as its bytes
    (``text``). ``want_prompt``: the session has no first prompt yet.
    ``too_long``: after the lines comes one over ``max_line_bytes``, (its length, its first bytes): a
    bad line the checkpoint moves past too. ``unterminated``: the last line is the file's final line,
    without a newline. ``failed``: the lines are stored with nothing derived, for that reason (their
    batch failed alone). Whatever fails while deriving one line's view or session figures is that
    line's error: the line is still a row, and the other lines go on.
    """
    b = Batch(start=start, end=start, parent_session=f.parent_session)
    gen = f.generation
    fallback_session = f.parent_session or f.session_key
    sub = is_subagent(f.session_key, f.parent_session)
    flat_agent = is_agent_key(f.session_key)
    derive = failed is None
    pos = start
    for line in lines:
        offset = pos
        pos += len(line) + 1
        try:
            reader.check_length(len(line), max_line)  # the same rule when the whole line happened to fit in the read
            raw = text(line, long_line)
            v = parse(line)
        except reader.LineTooLong as e:
            _bad_line(f, offset, len(line), line, _why(e), b, reattach)
            continue
        except (UnicodeDecodeError, BadLine) as e:
            salvaged = _after_nuls(line)
            if salvaged is None:
                _bad_line(f, offset, len(line), line, _why(e), b, reattach)
                continue
            cut, rest, raw, v = salvaged
            _bad_line(f, offset, cut, line[:cut], f"{line[:cut].count(0)} NUL bytes before a record (the "
                      f"record after them is kept at offset {offset + cut})", b, reattach)
            line = rest
            offset += cut
            derive_line, view_error = derive, None
        except Exception as e:  # a bug reading a line that is UTF-8: kept, with nothing derived from it
            log.exception("%s: cannot read the line at offset %d", f.path, offset)
            v, derive_line, view_error = LineView(), False, e
        else:
            derive_line, view_error = derive, None
        if flat_agent and b.parent_session is None and v.session_id:
            b.parent_session = v.session_id  # a flat (Claude Code <= 2.0) subagent file
        if b.agg is None:
            b.agg = SessionAgg(f.project, b.parent_session, sub)
        digest = reader.digest(line) if reattach else b""
        old = reattach.rows.get(digest) if reattach else None
        if old:
            b.moves.append(Move(gen, offset, old.pop()))
            b.taken.append((reattach.rows, digest, b.moves[-1].id))  # type: ignore[union-attr]
            if derive_line:
                b.agg.add(v, counted=False)
            continue
        row_id = next_id + len(b.rows)
        b.rows.append(_row((row_id, f.file_id, gen, offset, v.session_id or fallback_session, v.uuid,
                            v.parent_uuid, v.type, v.timestamp, raw)))
        b.views.append(v if derive_line else None)
        if view_error is not None:
            b.line_errors.append(LineError(row_id, "view", error_text(view_error)))
        elif not derive_line:
            b.line_errors.append(LineError(row_id, "all", f"its batch failed alone: {failed}"))
        else:
            try:
                b.agg.add(v, counted=True)
                if want_prompt and b.agg.first_prompt is None:
                    b.agg.first_prompt = prompt_text(v)
            except Exception as e:
                b.line_errors.append(LineError(row_id, "sessions", error_text(e)))
    if too_long is not None:
        length, head = too_long
        _bad_line(f, pos, length, head, str(reader.LineTooLong(length, max_line)), b, reattach)
        pos += length + 1
    b.end = pos - 1 if unterminated else pos
    return b


def _bad_line(f: FileRow, offset: int, length: int, head: bytes, why: str, b: Batch, reattach: Reread | None) -> None:
    """Record a line that cannot be stored; a re-read finds it again instead of counting it twice."""
    head = head[:ERROR_HEAD]
    old = reattach.errors.get((length, head)) if reattach else None
    if old:
        b.error_moves.append(Move(f.generation, offset, old.pop()))
        b.taken.append((reattach.errors, (length, head), b.error_moves[-1].id))  # type: ignore[union-attr]
        return
    b.errors.append(BadLineRow(f.file_id, f.path, f.generation, offset, length, why, head))

"""The control-socket protocol: every message csm and csmd exchange.

Requests and replies are tagged msgspec Structs, msgpack on the wire, one message per
ZeroMQ frame. A client sends one request and reads replies until it gets a *final*
one: most requests get exactly one reply; long requests (sync) first stream
``Progress`` messages, which also tell the client the daemon is alive.

Evolution rules (msgspec's): new fields get defaults, fields are never reordered or
retyped, unknown fields are ignored, so an older CLI can talk to a newer daemon.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from csm.shared.errors import CsmError, DaemonError

PROTOCOL = 1
MAX_REQUEST_BYTES = 1 << 20


class Message(msgspec.Struct, kw_only=True, omit_defaults=True, tag=True):
    """Base of all messages: keyword-only so fields can be added in any order later."""


# --- requests -----------------------------------------------------------------------


class Status(Message, kw_only=True):
    pass


class Sync(Message, kw_only=True):
    """Rescan every root and ingest what is new; replies when done (or at once with ``wait=False``)."""

    wait: bool = True


class Query(Message, kw_only=True):
    """Read-only SQL on the daemon's database."""

    sql: str
    params: list[Any] = []
    max_rows: int = 10_000


class UsageReport(Message, kw_only=True):
    """Token and cost totals of the counted API responses, grouped (``csm query usage``).

    ``since``/``until`` are UTC instants (``YYYY-MM-DDTHH:MM:SS``, see ``shared.timespec``),
    the client having read the user's words in ``tz`` (an IANA zone name), the zone whose
    days, weeks and months the rows are grouped by. ``project``: the one rule of ``daemon.projects``.
    """

    by: str = "day"
    since: str | None = None
    until: str | None = None
    tz: str = "UTC"
    project: str | None = None



class GetConfig(Message, kw_only=True):
    """The settings csmd runs with and where each came from (``csm config show``)."""


class Fault(Message, kw_only=True):
    """Break a part on purpose to test its recovery; csmd refuses it unless started with ``CSM_TEST_HOOKS=1``.

    ``kill-watcher``: the watcher's dispatch thread dies of an exception, as watchdog's does
    when a handler raises; ``stop-watcher``: the observer stops without a word.
    """

    action: str


class Sessions(Message, kw_only=True):
    """Sessions active in ``[since, until)`` (UTC instants, ``YYYY-MM-DDTHH:MM:SS``), most recent first."""

    project: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 50
    title: str | None = None
    """Only sessions whose title holds each of these words (any case)."""
    offset: int = 0


class Show(Message, kw_only=True):
    """One session's conversation; ``session`` may be a unique prefix of its id.

    ``limit`` entries from ``offset``, so a page of a long session does not carry the rest over the
    socket; with ``at`` (an entry's timestamp), the page of ``limit`` entries that holds that entry,
    whatever ``offset`` says; an ``offset`` past the end gives the last page. Without a ``limit``,
    the whole conversation, which needs ``stream``: its entries come in ``Messages`` (acknowledged
    with ``Ack``, as an export's chunks are) before the ``Transcript`` that ends it, which holds none."""

    session: str
    full: bool = False
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    at: str | None = None
    stream: bool = False


class Search(Message, kw_only=True):
    """Full-text search (FTS5 syntax) over prompts, answers and summaries, and tools if asked; ``since``/``until``
    as in ``Sessions``."""

    text: str
    project: str | None = None
    since: str | None = None
    until: str | None = None
    include_tools: bool = False
    limit: int = 20


class Watch(Message, kw_only=True):
    """Subscribe to new messages as csmd ingests them (all, one session and its subagents, or a project)."""

    session: str | None = None
    project: str | None = None


class ListErrors(Message, kw_only=True):
    """The bad lines csmd skipped (``sync_errors``) and the stored lines whose derived data failed
    (``line_errors``), by file and offset."""

    max_rows: int = 10_000


class Export(Message, kw_only=True):
    """A session's or a file's lines. ``target``: an absolute file path, a session id, or a unique
    prefix of one. Replies with an ``ExportFile`` and its ``Chunk`` messages for each file, then
    ``ExportDone``."""

    target: str
    format: str = "jsonl"
    subagents: bool = False
    """Also the files of the session's subagents, each after the session's own (``csm restore``)."""


class Ack(Message, kw_only=True):
    """Sent by a client streaming an ``Export``, a ``Watch`` or a ``Show`` on the same socket: it has written out
    the ``Chunk`` or ``Messages`` numbered ``seq``. csmd sends only a few pieces ahead of the last
    one acknowledged, so a client that stops reading (Ctrl-Z) cannot make it queue the whole stream.
    No reply."""

    seq: int


class TeamStatus(Message, kw_only=True):
    """How the mirror into the team's PostgreSQL is doing (``csm team status``)."""


class TeamResync(Message, kw_only=True):
    """Send the whole history to the team's PostgreSQL again, with what is shared now (``csm team resync``)."""


class ReloadConfig(Message, kw_only=True):
    """Read the config file again and apply what can change while csmd runs (``shared.config.LIVE``);
    the reply names what was applied and what waits for a restart."""


class Archive(Message, kw_only=True):
    """Move the lines of whole sessions that ended before ``before`` (a UTC wire instant) into archive files;
    replies when done (``ArchiveReply``)."""

    before: str


class ArchiveList(Message, kw_only=True):
    """Each archive file, with its sessions (``ArchiveReply.archives``)."""


Request = (
    Status | Sync | Query | UsageReport | GetConfig | Fault | Sessions | Show | Search | Watch | ListErrors | Export
    | Ack | TeamStatus | TeamResync | ReloadConfig | Archive | ArchiveList
)


# --- replies ------------------------------------------------------------------------


class Error(Message, kw_only=True):
    """An error reply: ``code`` names its class in ``shared/errors.py`` (``errors.from_code``)."""

    code: str
    message: str

    @classmethod
    def of(cls, e: CsmError) -> Error:
        return cls(code=e.code or DaemonError.code, message=str(e))


class Ok(Message, kw_only=True):
    message: str = ""


class Backlog(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Work through a backlog, as files and bytes done of the total.

    While ``counting`` the rescan is still listing files: the totals grow and nothing is done yet.
    ``bytes_done`` moves with every committed batch, so it advances inside one large file too.
    """

    counting: bool = False
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    rate_bps: float = 0.0
    eta_s: float | None = None


class LostBefore(msgspec.Struct, kw_only=True):
    """Prompts in Claude Code's history.jsonl whose transcripts were deleted before csm archived them."""

    sessions: int
    """Sessions named (by ``sessionId``) that the archive never held."""
    prompts: int
    first: str | None = None
    last: str | None = None


class StatusReply(Message, kw_only=True):
    version: str
    protocol: int = PROTOCOL
    pid: int
    uptime_s: float
    state: str
    db_path: str
    roots: list[str]
    files: int
    files_gone: int = 0
    events: int
    sessions: int
    sessions_gone: int = 0
    errors: int
    line_errors: int = 0
    """Stored lines whose derived data (usage, search text, session figures) could not be made."""
    last_sync_at: str | None = None
    watch_mode: str = "watching"
    watcher_restarts: int = 0
    backlog: Backlog | None = None
    last_error: str | None = None
    db_problem: str | None = None
    """Damage ``quick_check`` found, or the database or its WAL deleted or replaced while csmd has it open."""
    db_checked_at: str | None = None
    """When ``quick_check`` last finished (None until the first, which starts with csmd)."""
    cleanup_period_days: int = 30
    """Claude Code's ``cleanupPeriodDays``: transcripts idle this long are deleted (sessions_gone: kept only here)."""
    cleanup_period_source: str = "default"
    """The settings.json that sets it, or "default"."""
    archived_sessions: int = 0
    """Sessions whose lines are in archive files (``csm archive``); counted in ``sessions`` too."""
    archived_lines: int = 0
    """Lines in archive files; counted in ``events`` too."""
    lost_before_csm: LostBefore | None = None
    """Found once, after csmd's first rescan (daemon/retention.py); None until then, 0 prompts when nothing was lost."""
    commits: int = 0
    """Write transactions the ingest thread committed since csmd started (a round of appends to many files is one)."""


class ArchiveInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One archive file: its sessions, their lines as moved, the time they span, its size, and why it cannot be
    read (None: it can)."""

    name: str
    file: str
    sessions: int = 0
    lines: int = 0
    first: str | None = None
    last: str | None = None
    bytes: int = 0
    problem: str | None = None


class ArchiveReply(Message, kw_only=True):
    """What ``Archive`` moved (sessions, lines; sessions left for later and why), and the archives after it;
    to ``ArchiveList``, the archives alone."""

    sessions: int = 0
    lines: int = 0
    skipped: int = 0
    skipped_why: str = ""
    seconds: float = 0.0
    archives: list[ArchiveInfo] = []


class Progress(Message, kw_only=True):
    backlog: Backlog


class SyncReply(Message, kw_only=True):
    files_scanned: int
    files_changed: int
    lines_ingested: int
    errors: int
    seconds: float


class Setting(msgspec.Struct, kw_only=True):
    """One effective setting: its value and where it came from.

    ``source`` is ``default``, ``file``, ``environment`` or ``command line``; ``where`` says
    which (``/path/config.toml:3``, ``CLAUDE_CONFIG_DIR``, ``--root``).
    """

    value: Any
    source: str
    where: str = ""


class ConfigReply(Message, kw_only=True):
    pid: int
    config_file: str
    config_file_exists: bool
    config_file_source: str = "default"
    settings: dict[str, Setting]


class Rows(Message, kw_only=True):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False
    limit: str = ""
    """When truncated, the limit that was hit: "rows" (the request's or csmd's row cap) or "bytes"."""


class UsageRows(Message, kw_only=True):
    """Rows of a usage report; ``unpriced_models`` had tokens but no price (their cost is not in ``cost_usd``)."""

    columns: list[str]
    rows: list[list[Any]]
    unpriced_models: list[str] = []
    prices_updated: str = ""
    tz: str = "UTC"


IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""The image types csm passes on: pictures every browser shows, not SVG (which can hold script)."""
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class Image(msgspec.Struct, kw_only=True):
    """An image a transcript holds (a pasted screenshot, a tool's output), base64 as Claude Code wrote it."""

    media_type: str
    data: str

    def data_url(self) -> str:
        """The picture as a ``data:`` URL (the web page's CSP allows ``img-src data:``; an exported file needs
        nothing beside it), or "" unless it is base64 of one of ``IMAGE_TYPES``."""
        if self.media_type not in IMAGE_TYPES or not _BASE64.fullmatch(self.data):
            return ""
        return f"data:{self.media_type};base64,{self.data}"


class Entry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One item of a conversation, as ``show``, ``export`` and ``watch`` print it.

    ``kind``: user, assistant, tool (a call, with its result attached), tool_result (a result
    whose call is not in the file), summary, compact (a compaction boundary) or subagent (the
    header of a nested subagent session, whose entries follow one ``depth`` deeper).
    ``thinking`` and ``images`` (like ``input`` and ``output``) come only with ``Show.full``;
    ``is_error`` marks a failed tool call and an API error Claude Code wrote as an answer.
    """

    kind: str
    timestamp: str | None = None
    text: str = ""
    model: str | None = None
    tool: str | None = None
    detail: str | None = None
    input: str | None = None
    output: str | None = None
    is_error: bool = False
    session_id: str | None = None
    project: str | None = None
    parent: str | None = None
    """``watch`` only: the session a subagent's entry belongs to, so a page of that session can follow it."""
    depth: int = 0
    thinking: str | None = None
    images: list[Image] = []


class SessionInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    session_id: str
    project: str
    title: str | None = None
    cwd: str | None = None
    started: str | None = None
    last_activity: str | None = None
    messages: int = 0
    parent_session_id: str | None = None
    file_present: bool = True
    resume: str | None = None


class Transcript(Message, kw_only=True):
    """``entries`` are the conversation's from ``offset`` on (``Show.limit`` of them at most), of ``total``;
    ``hit`` is the index (in the whole conversation) of the entry ``Show.at`` named, if any. A page
    that did not need the rest of the session is ``complete=False``: ``total`` then counts only the
    entries read, and more follow. A streamed conversation's (``Show.stream``) came before it in
    ``Messages``: it holds none of them, and ``total`` counts them."""

    session: SessionInfo
    entries: list[Entry]
    offset: int = 0
    total: int = 0
    hit: int | None = None
    complete: bool = True


class Watching(Message, kw_only=True):
    """The subscription is live; ``Messages`` and ``Heartbeat`` follow until the daemon stops (``Ok``)."""

    what: str
    heartbeat_s: float


class Messages(Message, kw_only=True):
    """Entries of a ``Watch`` or of a streamed ``Show``."""

    entries: list[Entry]
    seq: int = 0
    """Numbers the ``Messages`` of one subscription or stream from 0, for the client's ``Ack``."""


class Heartbeat(Message, kw_only=True):
    missed: int = 0
    """Messages dropped since the last delivery because this subscriber read too slowly."""


class Chunk(Message, kw_only=True):
    """A piece of a streamed output; ``seq`` counts from 0 so a lost piece is noticed."""

    seq: int
    data: bytes


class ExportFile(Message, kw_only=True):
    """The ``Chunk``s that follow, up to the next ``ExportFile``, are this file's bytes (a chunk never
    holds two files). ``path``: where the file is, or was last seen."""

    path: str


class ExportDone(Message, kw_only=True):
    """The end of an export: what was sent, for the client to check it got all of it."""

    files: list[str]
    lines: int
    bytes: int
    chunks: int


class TeamStatusReply(Message, kw_only=True):
    """The mirror's state. ``position``: the last local line (``events.id``) whose shared rows PostgreSQL has
    committed; ``head``: the newest line; ``behind_s``: the age of the oldest line not mirrored yet."""

    configured: bool
    member: str = ""
    machine: str = ""
    share: str = ""
    target: str = ""
    """The connection (libpq conninfo or service; never a password: config.toml cannot hold one)."""
    archive: str = ""
    connected: bool = False
    position: int = 0
    head: int = 0
    behind_rows: int = 0
    behind_s: float | None = None
    last_error: str | None = None
    last_sent_at: str | None = None
    rows_sent: int = 0


Reply = (
    Error | Ok | StatusReply | Progress | SyncReply | Rows | UsageRows | ConfigReply | Transcript | Watching | Messages
    | Heartbeat | Chunk | ExportFile | ExportDone | TeamStatusReply | ArchiveReply
)

FINAL_REPLIES = (Error, Ok, StatusReply, SyncReply, Rows, UsageRows, ConfigReply, Transcript, ExportDone,
                 TeamStatusReply, ArchiveReply)
"""Every other reply is streamed (``Progress``, ``Chunk``, …): more follow until a final one."""

_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(Request)
_reply_decoder = msgspec.msgpack.Decoder(Reply)


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def decode_request(data: bytes) -> Request:
    """Decode a request; raises ``msgspec.DecodeError``/``ValidationError`` on bad input."""
    return _request_decoder.decode(data)


def decode_reply(data: bytes) -> Reply:
    return _reply_decoder.decode(data)

"""A transcript's lines turned into a readable conversation (``Entry`` items).

Claude Code writes one line per content block, so one assistant response is several
lines sharing ``message.id``; they are merged, in file order, into one ``assistant``
entry (its text) followed by its tool calls. A tool call gets its result attached
(matched by ``tool_use_id``), so a conversation reads as call, outcome, next turn.

An entry is *settled* once nothing later can change it, and ``Builder.settled`` hands entries out
as soon as they and every entry before them are: a whole session is then shown holding only the
entries still open, never all of them. A call is open until its result comes, a response until a
line of another response comes; either is settled anyway ``SETTLE_LINES`` conversation lines after
it began (a call whose result never came: an interrupted session, a lost line). A result that comes
later than that is an entry of its own (``tool_result``), as is a second result for one call; a
response's line that late begins a new entry. Every view of a session (a page, the whole of it, an
export) goes through this one rule, so they all show the same entries.
Everything else that is not conversation (progress, hooks, snapshots, meta lines) is
left out; the raw lines stay available through ``csm export --raw`` and ``lines``.
"""

from __future__ import annotations

import json
import re

from csm.daemon.content import Block, decode_any, image, result_images, strings
from csm.daemon.parse import BadLine, LineView, is_synthetic, parse
from csm.shared.protocol import Entry

DETAIL_MAX = 120
SETTLE_LINES = 100
"""Conversation lines (prompts, responses, results, summaries; not progress or meta lines) within
which a call's result or a response's next line still joins its entry; plenty for parallel calls."""
_COMMAND = re.compile(r"<command-name>(.*?)</command-name>.*?(?:<command-args>(.*?)</command-args>)?", re.S)
# The input field that says what a tool call does, for well-known tools.
_KEY_FIELD = {
    "Bash": "command", "Read": "file_path", "Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path", "Glob": "pattern", "Grep": "pattern", "Task": "description",
    "Agent": "description", "WebFetch": "url", "WebSearch": "query", "Skill": "skill",
}


def one_line(text: str, limit: int = DETAIL_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tool_detail(name: str, value: object) -> str:
    """What a tool call does, in one line: its command, path, pattern or description."""
    if isinstance(value, dict):
        key = _KEY_FIELD.get(name)
        if key and isinstance(value.get(key), str):
            return one_line(value[key])
        if name == "TodoWrite" and isinstance(value.get("todos"), list):
            return f"{len(value['todos'])} items"
    return one_line(" ".join(strings(value, [])))


def _user_text(text: str) -> str:
    """Slash commands arrive wrapped in tags; show them as typed."""
    m = _COMMAND.search(text) if text.startswith("<command-") else None
    if m:
        return f"{m.group(1)} {m.group(2) or ''}".strip()
    return text.strip()


def _agent_id(line: LineView) -> str | None:
    value = decode_any(line.tool_use_result)
    agent = value.get("agentId") if isinstance(value, dict) else None
    return agent if isinstance(agent, str) else None


class Builder:
    """Feeds lines in file order; ``entries`` is the conversation so far, less what ``settled`` handed out.

    ``full`` keeps tool input (pretty JSON) and output; otherwise a call is one line.
    ``spawned`` maps a call (its entry's index in the whole conversation) to the subagent its
    result names, so the caller can nest that subagent's session right after the call.
    """

    def __init__(self, full: bool, depth: int = 0, session_id: str | None = None, project: str | None = None):
        self.full = full
        self.depth = depth
        self.session_id = session_id
        self.project = project
        self.entries: list[Entry] = []
        self.taken = 0
        """Entries handed out by ``settled``: ``entries[0]`` is the conversation's entry number ``taken``."""
        self.spawned: dict[int, str] = {}
        self.lines = 0
        """Conversation lines read (the clock of ``SETTLE_LINES``)."""
        self._calls: dict[str, int] = {}  # tool_use id -> its open call's index
        self._assistant: dict[str, int] = {}  # message id -> its open response's index
        self._open: dict[int, tuple[int, dict[str, int], str]] = {}
        """Open entries by index, oldest first: the line that opened each, and where it is registered."""

    def _entry(self, kind: str, ts: str | None, **kw: object) -> Entry:
        e = Entry(kind=kind, timestamp=ts, depth=self.depth, session_id=self.session_id, project=self.project,
                  **kw)  # type: ignore[arg-type]
        self.entries.append(e)
        return e

    def _opened(self, registry: dict[str, int], key: str) -> None:
        """The entry just made stays open under ``key`` (a call's id, a response's message id)."""
        if key in registry:  # the same id again (a repeated line): the first entry is done
            self._settle(registry[key])
        index = self.taken + len(self.entries) - 1
        registry[key] = index
        self._open[index] = (self.lines, registry, key)

    def _settle(self, index: int) -> None:
        _, registry, key = self._open.pop(index)
        del registry[key]

    def _get(self, index: int) -> Entry:
        return self.entries[index - self.taken]

    def settled(self) -> list[tuple[Entry, str | None]]:
        """Hand out the entries that can no longer change, in order (those before the first still open),
        each with the subagent its call spawned, if any."""
        end = next(iter(self._open), self.taken + len(self.entries)) - self.taken
        out = [(e, self.spawned.pop(self.taken + i, None)) for i, e in enumerate(self.entries[:end])]
        del self.entries[:end]
        self.taken += end
        return out

    def finish(self) -> None:
        """No lines follow: every entry is settled."""
        while self._open:
            self._settle(next(iter(self._open)))

    def _tick(self) -> None:
        """One more conversation line: entries open for ``SETTLE_LINES`` of them are settled."""
        self.lines += 1
        while self._open and next(iter(self._open.values()))[0] < self.lines - SETTLE_LINES:
            self._settle(next(iter(self._open)))

    def add_raw(self, raw: str | bytes) -> None:
        """A stored line: decoded here, as the ingest thread decodes a new one (a bad line is left out)."""
        try:
            self.add(parse(raw.encode() if isinstance(raw, str) else raw))
        except BadLine:
            pass

    def add(self, line: LineView) -> None:
        """One line's view, as the ingest thread decoded it (``csm watch``) or ``add_raw`` did."""
        ts = line.timestamp
        summary = line.type == "summary" and bool(line.summary)
        compact = line.type == "system" and line.subtype == "compact_boundary"
        talk = line.message is not None and not line.is_meta and line.type in ("user", "assistant")
        if not (summary or compact or talk):
            return
        self._tick()
        if summary:
            self._entry("summary", ts, text=line.summary)
        elif compact:
            self._entry("compact", ts, text="conversation compacted")
        elif line.type == "user":
            self._user(line, ts)
        else:
            self._assistant_line(line, ts)

    def _user(self, line: LineView, ts: str | None) -> None:
        texts = []
        images = []
        for b in line.blocks:
            if b.type == "text" and b.text:
                texts.append(b.text)
            elif b.type == "tool_result":
                self._result(b, line, ts)
            elif b.type == "image" and self.full and (picture := image(b)):
                images.append(picture)
        text = "\n".join(texts).strip()
        if not text and not images:
            return
        if line.is_compact_summary:
            self._entry("summary", ts, text=text)
        else:
            self._entry("user", ts, text=_user_text(text), images=images)

    def _result(self, b: Block, line: LineView, ts: str | None) -> None:
        index = self._calls.get(b.tool_use_id or "")
        if index is None:
            e = self._entry("tool_result", ts, is_error=bool(b.is_error))
            if self.full:
                e.output = b.output
                e.images = result_images(b)
            return
        self._settle(index)
        call = self._get(index)
        call.is_error = bool(b.is_error)
        if self.full:
            call.output = b.output
            call.images = result_images(b)
        agent = _agent_id(line)
        if agent:
            self.spawned[index] = agent

    def _assistant_line(self, line: LineView, ts: str | None) -> None:
        msg = line.message
        assert msg is not None
        model = None if is_synthetic(msg.model) else msg.model
        if msg.id:  # another response has begun: the ones before it are whole
            for other in [i for key, i in self._assistant.items() if key != msg.id]:
                self._settle(other)
        head = self._get(self._assistant[msg.id]) if msg.id in self._assistant else None
        for b in line.blocks:
            if b.type == "text" and b.text and b.text.strip():
                if head is None:
                    head = self._head(msg.id, ts, model, bool(line.is_api_error_message))
                head.text = f"{head.text}\n\n{b.text.strip()}" if head.text else b.text.strip()
            elif b.type == "thinking" and self.full and b.thinking and b.thinking.strip():
                if head is None:
                    head = self._head(msg.id, ts, model, False)
                head.thinking = f"{head.thinking}\n\n{b.thinking.strip()}" if head.thinking else b.thinking.strip()
            elif b.type == "tool_use":
                name = b.name or "?"
                value = b.value
                e = self._entry("tool", ts, tool=name, detail=tool_detail(name, value), model=model)
                if self.full:
                    e.input = json.dumps(value, indent=2, ensure_ascii=False)
                if b.id:
                    self._opened(self._calls, b.id)


    def _head(self, message_id: str | None, ts: str | None, model: str | None, api_error: bool) -> Entry:
        """A response's one ``assistant`` entry: its text and thinking, from however many lines."""
        head = self._entry("assistant", ts, model=model, is_error=api_error)
        if message_id:
            self._opened(self._assistant, message_id)
        return head

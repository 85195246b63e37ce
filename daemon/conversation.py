"""A transcript's lines turned into a readable conversation (``Entry`` items).

Claude Code writes one line per content block, so one assistant response is several
lines sharing ``message.id``; they are merged, in file order, into one ``assistant``
entry (its text) followed by its tool calls. A tool call gets its result attached
(matched by ``tool_use_id``), so a conversation reads as call, outcome, next turn.
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
    """Feeds lines in file order; ``entries`` is the conversation so far.

    ``full`` keeps tool input (pretty JSON) and output; otherwise a call is one line.
    ``spawned`` collects (entry index, agent id) for tool results that name a subagent,
    so the caller can nest that subagent's session right after the call.
    """

    def __init__(self, full: bool, depth: int = 0, session_id: str | None = None, project: str | None = None):
        self.full = full
        self.depth = depth
        self.session_id = session_id
        self.project = project
        self.entries: list[Entry] = []
        self.spawned: list[tuple[int, str]] = []
        self._calls: dict[str, tuple[int, Entry]] = {}
        self._assistant: dict[str, Entry] = {}

    def _entry(self, kind: str, ts: str | None, **kw: object) -> Entry:
        e = Entry(kind=kind, timestamp=ts, depth=self.depth, session_id=self.session_id, project=self.project,
                  **kw)  # type: ignore[arg-type]
        self.entries.append(e)
        return e

    def add_raw(self, raw: str | bytes) -> None:
        """A stored line: decoded here, as the ingest thread decodes a new one (a bad line is left out)."""
        try:
            self.add(parse(raw.encode() if isinstance(raw, str) else raw))
        except BadLine:
            pass

    def add(self, line: LineView) -> None:
        """One line's view, as the ingest thread decoded it (``csm watch``) or ``add_raw`` did."""
        ts = line.timestamp
        if line.type == "summary" and line.summary:
            self._entry("summary", ts, text=line.summary)
        elif line.type == "system" and line.subtype == "compact_boundary":
            self._entry("compact", ts, text="conversation compacted")
        elif line.message is None or line.is_meta:
            return
        elif line.type == "user":
            self._user(line, ts)
        elif line.type == "assistant":
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
        index, call = self._calls.get(b.tool_use_id or "", (-1, None))
        if call is None:
            e = self._entry("tool_result", ts, is_error=bool(b.is_error))
            if self.full:
                e.output = b.output
                e.images = result_images(b)
            return
        call.is_error = bool(b.is_error)
        if self.full:
            call.output = b.output
            call.images = result_images(b)
        agent = _agent_id(line)
        if agent:
            self.spawned.append((index, agent))

    def _assistant_line(self, line: LineView, ts: str | None) -> None:
        msg = line.message
        assert msg is not None
        model = None if is_synthetic(msg.model) else msg.model
        head = self._assistant.get(msg.id) if msg.id else None
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
                    self._calls[b.id] = (len(self.entries) - 1, e)


    def _head(self, message_id: str | None, ts: str | None, model: str | None, api_error: bool) -> Entry:
        """A response's one ``assistant`` entry: its text and thinking, from however many lines."""
        head = self._entry("assistant", ts, model=model, is_error=api_error)
        if message_id:
            self._assistant[message_id] = head
        return head

"""Turn one transcript line into the columns csm indexes.

The typed fast path decodes only the fields csm indexes into small Structs and
leaves the rest unparsed (msgspec skips unknown fields without building them), which
is what makes a 100 MB backlog cheap. Claude Code has no published schema and its
lines drift between versions, so a line the fast path rejects for a *type* reason
(say ``message`` being a string) is decoded again generically and kept: only lines
that are not JSON objects at all, or not UTF-8, are bad lines.
"""

from __future__ import annotations

from typing import Any

import msgspec


class BadLine(Exception):
    """A line that cannot be stored; ``str(self)`` says why."""


class Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class MessageView(msgspec.Struct):
    id: str | None = None
    role: str | None = None
    model: str | None = None
    content: msgspec.Raw = msgspec.Raw()
    """Left undecoded; empty when absent. Not ``Raw | None``: msgspec (0.22) does not keep a
    union member as raw, so every line with content failed the typed pass and was decoded
    again generically — 3x the parse cost of a backlog."""
    usage: Usage | None = None


class LineView(msgspec.Struct, rename="camel"):
    type: str | None = None
    uuid: str | None = None
    parent_uuid: str | None = None
    session_id: str | None = None
    timestamp: str | None = None
    cwd: str | None = None
    is_sidechain: bool | None = None
    is_meta: bool | None = None
    request_id: str | None = None
    message: MessageView | None = None
    summary: str | None = None
    ai_title: str | None = None
    custom_title: str | None = None


_decoder = msgspec.json.Decoder(LineView)
_any_decoder = msgspec.json.Decoder()


def parse(line: bytes) -> LineView:
    """Parse one line (without its ``\\n``); raises ``BadLine``."""
    try:
        return _decoder.decode(line)
    except msgspec.ValidationError:
        return _lenient(line)
    except msgspec.DecodeError as e:
        raise BadLine(_describe(line, e)) from None


def _describe(line: bytes, e: Exception) -> str:
    if not line.strip():
        return "empty line"
    if b"\x00" in line:
        return f"NUL bytes in line ({line.count(0)}): {e}"
    return f"invalid JSON: {e}"


def _str(obj: dict[str, Any], key: str) -> str | None:
    v = obj.get(key)
    return v if isinstance(v, str) else None


def _lenient(line: bytes) -> LineView:
    """Keep a valid JSON object whose fields have unexpected types."""
    try:
        obj = _any_decoder.decode(line)
    except msgspec.DecodeError as e:  # pragma: no cover - the typed pass decoded it
        raise BadLine(_describe(line, e)) from None
    if not isinstance(obj, dict):
        raise BadLine(f"JSON {type(obj).__name__}, not an object")
    msg = obj.get("message")
    view = None
    if isinstance(msg, dict):
        try:
            view = msgspec.convert({k: v for k, v in msg.items() if k != "content"}, MessageView)
        except msgspec.ValidationError:
            view = MessageView(id=_str(msg, "id"), role=_str(msg, "role"), model=_str(msg, "model"))
        if "content" in msg:
            view.content = msgspec.Raw(msgspec.json.encode(msg["content"]))
    side = obj.get("isSidechain")
    meta = obj.get("isMeta")
    return LineView(
        type=_str(obj, "type"),
        uuid=_str(obj, "uuid"),
        parent_uuid=_str(obj, "parentUuid"),
        session_id=_str(obj, "sessionId"),
        timestamp=_str(obj, "timestamp"),
        cwd=_str(obj, "cwd"),
        is_sidechain=side if isinstance(side, bool) else None,
        is_meta=meta if isinstance(meta, bool) else None,
        request_id=_str(obj, "requestId"),
        message=view,
        summary=_str(obj, "summary"),
        ai_title=_str(obj, "aiTitle"),
        custom_title=_str(obj, "customTitle"),
    )


def prompt_text(view: LineView) -> str | None:
    """The text a user typed, for a session title; None for tool results and meta lines."""
    if view.type != "user" or view.is_meta or view.message is None or not view.message.content:
        return None
    try:
        content = msgspec.json.decode(view.message.content)
    except msgspec.DecodeError:
        return None
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        text = " ".join(p for p in parts if isinstance(p, str))
    else:
        return None
    text = " ".join(text.split())
    # Slash commands and hook output arrive as user lines wrapped in XML-ish tags.
    if not text or text.startswith("<"):
        return None
    return text[:200]

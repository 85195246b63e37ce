"""Turn one transcript line into the columns csm indexes.

The typed fast path decodes only the fields csm indexes into small Structs and
leaves the rest unparsed (msgspec skips unknown fields without building them), which
is what makes a 100 MB backlog cheap. Claude Code has no published schema and its
lines drift between versions, so a line the fast path rejects for a *type* reason
(say ``message`` being a string) is decoded again generically and kept: only lines
that are not JSON objects at all, or not UTF-8, are bad lines.

msgspec is also stricter than JSON itself in three corners a writer can reach, and each
line that meets one is still read, so "bad line" means exactly "not a JSON object":

- an escaped lone surrogate (``JSON.stringify`` of a string cut inside an emoji writes
  ``"\\ud83d"``): the view is read from a copy of the line in which each one reads as
  U+FFFD, so no string that SQLite or msgspec cannot encode ever leaves this module;
- a number beyond a double: decoded again with the standard library;
- nesting deeper than the decoders' recursion limit (about 1000 levels, less the caller's
  own stack): the view is read from a copy in which whatever lies deeper than
  ``SHALLOW_DEPTH`` reads as ``null`` (``shallow``, which also checks the whole line is JSON).

The raw line is always stored as it is; only the view is read from these copies.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from csm.daemon.content import CACHE, Block, blocks


class BadLine(Exception):
    """A line that cannot be stored; ``str(self)`` says why."""


class CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class Usage(msgspec.Struct):
    """``message.usage``; a ``null`` count (seen in hand-edited files) reads as 0."""

    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cache_creation_input_tokens: int | None = 0
    cache_read_input_tokens: int | None = 0
    cache_creation: CacheCreation | None = None
    speed: str | None = None


class MessageView(msgspec.Struct):
    id: str | None = None
    role: str | None = None
    model: str | None = None
    # msgspec cannot put Raw in a union (``Raw | None`` rejects any non-null value), so the
    # absent field defaults to None while a present one, even ``null``, is Raw.
    content: msgspec.Raw = None  # type: ignore[assignment]
    usage: Usage | None = None


class ProgressData(msgspec.Struct):
    """A ``progress`` line's ``data``: its ``message`` (a subagent's, in ``agent_progress``) left
    undecoded. Decoding it into this costs what skipping it costs, and saves searching the bytes
    of every hook and bash progress line for a message they do not have."""

    message: msgspec.Raw = None  # type: ignore[assignment]


class EmbeddedMessage(msgspec.Struct, rename="camel"):
    """A message a ``progress`` line carries in ``data.message`` (a subagent's, in ``agent_progress``)."""

    type: str | None = None
    timestamp: str | None = None
    request_id: str | None = None
    is_sidechain: bool | None = None
    message: MessageView | None = None


class LineView(msgspec.Struct, rename="camel", gc=False):
    """One line as every reader of it sees it: the ingest thread decodes each line once, into this, and the
    session figures, the title, the usage and search sinks and ``csm watch`` all read the same view.

    The indexed fields are decoded with the line; the larger parts (``message.content``, a progress
    line's embedded message, ``toolUseResult``) stay ``msgspec.Raw`` until a reader asks, and are then
    decoded once for all of them (``blocks``, ``embedded``, kept in the view's cache fields: see
    ``content.CACHE``). Untracked by the garbage collector: a view refers to nothing that refers back.
    """

    type: str | None = None
    uuid: str | None = None
    parent_uuid: str | None = None
    session_id: str | None = None
    timestamp: str | None = None
    cwd: str | None = None
    is_sidechain: bool | None = None
    is_meta: bool | None = None
    is_compact_summary: bool | None = None
    is_api_error_message: bool | None = None
    subtype: str | None = None
    request_id: str | None = None
    message: MessageView | None = None
    summary: str | None = None
    ai_title: str | None = None
    custom_title: str | None = None
    data: ProgressData | None = None
    """``progress`` lines' payload: only whether it embeds a message (see ``embedded``)."""
    tool_use_result: msgspec.Raw = msgspec.Raw()
    blocks_cache: list[Block] | None = msgspec.field(default=None, name=CACHE + "blocks")
    embedded_cache: EmbeddedMessage | None | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET,
                                                                              name=CACHE + "embedded")

    @property
    def blocks(self) -> list[Block]:
        """``message.content`` as blocks, decoded on first use (tool input and output stay Raw)."""
        if self.blocks_cache is None:
            self.blocks_cache = blocks(self.message.content) if self.message is not None else []
        return self.blocks_cache

    @property
    def embedded(self) -> EmbeddedMessage | None:
        """The API response a ``progress`` line embeds in ``data.message``, if it has one with usage."""
        if self.embedded_cache is msgspec.UNSET:
            self.embedded_cache = self._embedded()
        return self.embedded_cache

    def _embedded(self) -> EmbeddedMessage | None:
        if self.data is None or self.data.message is None or self.type != "progress":
            return None
        try:
            msg = _embedded_decoder.decode(self.data.message)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None  # a message of another shape (a string, say) carries no usage
        if msg.message is None or msg.message.usage is None:
            return None
        return msg


_decoder = msgspec.json.Decoder(LineView)
_any_decoder = msgspec.json.Decoder()
_embedded_decoder = msgspec.json.Decoder(EmbeddedMessage)


def parse(line: bytes) -> LineView:
    """Parse one line (without its ``\\n``); raises ``BadLine``."""
    try:
        return _parse(line)
    except RecursionError:  # nested deeper than the decoders go
        return _parse(shallow(line))


def _parse(line: bytes) -> LineView:
    try:
        return _decoder.decode(line)
    except msgspec.ValidationError:
        return _lenient(line)
    except msgspec.DecodeError as e:
        clean = _without_lone_surrogates(line)
        if clean != line:
            return _parse(clean)
        return _view(_standard_json(line, e))


_ESCAPE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u([dD][89a-fA-F][0-9a-fA-F]{2})|\\.",
                     re.S)
"""Every escape, left to right (so ``\\\\ud83d`` is a backslash and text): a surrogate pair, a lone
surrogate (group 1), or any other escape."""


def _without_lone_surrogates(line: bytes) -> bytes:
    return _ESCAPE.sub(lambda m: rb"\ufffd" if m.group(1) else m.group(0), line)


SHALLOW_DEPTH = 100
"""Levels of a too-deeply nested line that its view keeps; Claude Code's records use about ten."""
_TOKEN = re.compile(rb"""[ \t\n\r]*(?:("(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")"""
                    rb"|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)|(true|false|null)|([][{}:,]))")
_STRING, _NUMBER, _LITERAL, _PUNCT = 1, 2, 3, 4


def shallow(line: bytes, keep: int = SHALLOW_DEPTH) -> bytes:
    """The JSON ``line`` with every container nested deeper than ``keep`` levels replaced by ``null``.

    A scanner with an explicit stack instead of recursion, so any depth is read; it checks the
    whole line against JSON's grammar on the way (``BadLine`` when it is not JSON).
    """
    out: list[bytes] = []
    stack: list[bytes] = []
    state = "value"  # value, first (after '['), key, firstkey (after '{'), colon, next (after a member), end
    pos, end = 0, len(line)
    while True:
        m = _TOKEN.match(line, pos)
        if m is None:
            if state == "end" and not line[pos:].strip(b" \t\n\r"):
                return b"".join(out)
            raise BadLine(f"invalid JSON at byte {pos}" if pos < end else "invalid JSON: the line ends inside a value")
        kind, tok, at = m.lastindex, m.group(m.lastindex), m.start(m.lastindex)
        depth = len(stack)
        emit = depth <= keep  # whether this token is in the copy
        done = False  # a value just ended
        if kind == _STRING and state in ("key", "firstkey"):
            state = "colon"
        elif kind != _PUNCT and state in ("value", "first"):
            done = True
        elif tok in (b"[", b"{") and state in ("value", "first"):
            stack.append(tok)
            state = "first" if tok == b"[" else "firstkey"
            emit = depth < keep
            if depth == keep:
                out.append(b"null")
        elif tok in (b"]", b"}") and (state == ("first" if tok == b"]" else "firstkey") or (
                state == "next" and stack[-1] == (b"[" if tok == b"]" else b"{"))):
            stack.pop()
            emit = depth - 1 < keep
            done = True
        elif tok == b":" and state == "colon":
            state = "value"
        elif tok == b"," and state == "next":
            state = "value" if stack[-1] == b"[" else "key"
        else:
            raise BadLine(f"invalid JSON: unexpected {tok[:20].decode(errors='replace')!r} at byte {at}")
        if done:
            state = "next" if stack else "end"
        if emit:
            out.append(tok)
        pos = m.end()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _standard_json(line: bytes, e: Exception) -> Any:
    """The line as the JSON standard reads it (no NaN/Infinity); BadLine when it is not JSON."""
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:
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
    except msgspec.DecodeError as e:  # a number out of range is reported as a type error
        clean = _without_lone_surrogates(line)
        if clean != line:  # the typed pass stopped at a wrong type before reaching it
            return _lenient(clean)
        obj = _standard_json(line, e)
    return _view(obj)


def _view(obj: Any) -> LineView:
    """The indexed fields of any decoded JSON value, reading each only if it has the expected type."""
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
    compact = obj.get("isCompactSummary")
    api_error = obj.get("isApiErrorMessage")
    result = obj.get("toolUseResult")
    return LineView(
        type=_str(obj, "type"),
        uuid=_str(obj, "uuid"),
        parent_uuid=_str(obj, "parentUuid"),
        session_id=_str(obj, "sessionId"),
        timestamp=_str(obj, "timestamp"),
        cwd=_str(obj, "cwd"),
        is_sidechain=side if isinstance(side, bool) else None,
        is_meta=meta if isinstance(meta, bool) else None,
        is_compact_summary=compact if isinstance(compact, bool) else None,
        is_api_error_message=api_error if isinstance(api_error, bool) else None,
        subtype=_str(obj, "subtype"),
        request_id=_str(obj, "requestId"),
        message=view,
        summary=_str(obj, "summary"),
        ai_title=_str(obj, "aiTitle"),
        custom_title=_str(obj, "customTitle"),
        data=_progress_data(obj.get("data")),
        tool_use_result=msgspec.Raw(msgspec.json.encode(result)) if "toolUseResult" in obj else msgspec.Raw(),
    )


def _progress_data(data: Any) -> ProgressData | None:
    if not isinstance(data, dict):
        return None
    msg = data.get("message")
    return ProgressData(message=msgspec.Raw(msgspec.json.encode(msg)) if msg is not None else None)


def is_synthetic(model: str | None) -> bool:
    """Whether a model name is one Claude Code makes up for its own messages (``<synthetic>``), not an
    API model: such a response is not priced, and a session is not said to have used it. No model is too."""
    return not model or model.startswith("<")


def prompt_text(view: LineView) -> str | None:
    """The text a user typed, for a session title; None for tool results and meta lines."""
    if view.type != "user" or view.is_meta or view.message is None or not view.message.content:
        return None
    text = " ".join(" ".join(b.text for b in view.blocks if b.type == "text" and b.text).split())
    # Slash commands and hook output arrive as user lines wrapped in XML-ish tags; Claude Code
    # itself writes "[Request interrupted by user…]" as a user line.
    if not text or text.startswith(("<", "[Request interrupted")):
        return None
    return text[:200]

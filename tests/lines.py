"""Transcript lines as Claude Code writes them, for tests: the one place that knows their shape.

Tests pick their own ids and times (some check uuids such as ``u3``, others ``s1-u3``); the keys,
their nesting and the compact JSON encoding are here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def record(obj: dict[str, Any], newline: bool = False, ascii: bool = True) -> bytes:
    """A line's bytes: compact JSON; with ``ascii`` false, UTF-8 unescaped (as Claude Code writes it)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii).encode() + (b"\n" if newline else b"")


def prompt(uuid: str, session: str, ts: str | None, content: Any, **extra: Any) -> dict[str, Any]:
    """A user line: a typed prompt (``content`` a string) or tool results (a list of blocks)."""
    obj: dict[str, Any] = {"type": "user", "uuid": uuid, "sessionId": session}
    if ts is not None:
        obj["timestamp"] = ts
    obj["message"] = {"role": "user", "content": content}
    obj.update(extra)
    return obj


def response(uuid: str, session: str, ts: str | None, message: dict[str, Any], request: str | None = None,
             **extra: Any) -> dict[str, Any]:
    """An assistant line: one content block of an API response (``message``: id, model, content, usage)."""
    obj: dict[str, Any] = {"type": "assistant", "uuid": uuid, "sessionId": session}
    if ts is not None:
        obj["timestamp"] = ts
    if request is not None:
        obj["requestId"] = request
    obj["message"] = {"role": "assistant", **message}
    obj.update(extra)
    return obj


def agent_progress(uuid: str, session: str, ts: str, embedded: dict[str, Any]) -> dict[str, Any]:
    """A parent's ``agent_progress`` line embedding a subagent's line (``data.message``), as Claude Code 2.1 writes it."""
    inner = {k: v for k, v in embedded.items() if k != "sessionId"}
    return {"type": "progress", "uuid": uuid, "sessionId": session, "timestamp": ts,
            "data": {"type": "agent_progress", "agentId": "a1", "message": inner}}


def line(i: int, session: str = "s1", **extra: Any) -> bytes:
    """The i-th prompt of a session, chained by ``parentUuid``, with its newline: most tests' line."""
    return record(prompt(f"u{i}", session, f"2026-11-01T10:00:{i % 60:02d}.000Z", f"hello {i}",
                         parentUuid=f"u{i - 1}" if i else None) | extra, newline=True)


def append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(data)

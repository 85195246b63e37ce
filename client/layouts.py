"""A conversation (``protocol.Transcript``) as terminal text or GitHub Markdown (HTML: ``csm.web.conversation``).

The daemon decides what the conversation is (merged responses, tool calls with their
results, nested subagents); this module only lays it out. Everything from a transcript is
data: Markdown code is fenced longer than any backtick run inside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import click

from csm.shared.timespec import local
from csm.shared.protocol import Entry, SessionInfo, Transcript

INDENT = "    "


def _time(e: Entry) -> str:
    return local(e.timestamp, seconds=True)[11:] if e.timestamp else ""


def _tool_line(e: Entry) -> str:
    err = " (error)" if e.is_error else ""
    return f"→ {e.tool} {e.detail or ''}".rstrip() + err


# --- terminal text -----------------------------------------------------------------------


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else prefix.rstrip() for line in text.splitlines())


def entry_text(e: Entry, color: bool, show_session: bool = False) -> str:
    """One entry for a terminal: a header line, then its text indented under it."""
    bar = "│ " * e.depth
    pad = bar + " " * 10
    t = _time(e) or " " * 8
    who = f"{e.session_id[:8]} " if show_session and e.session_id else ""

    def style(s: str, **kw: object) -> str:
        return click.style(s, **kw) if color else s  # type: ignore[arg-type]

    if e.kind == "tool":
        head = f"{bar}{t}  {who}{style(_tool_line(e), fg='red' if e.is_error else 'cyan')}"
        parts = [head]
        if e.input:
            parts.append(_indent(e.input, pad))
        if e.output:
            parts.append(_indent(e.output, pad))
        return "\n".join(parts)
    if e.kind == "subagent":
        return f"{bar}{style('┌ subagent ' + (e.session_id or ''), bold=True)}  {e.text}".rstrip()
    if e.kind == "compact":
        return f"{bar}{t}  {style('── conversation compacted ──', dim=True)}"
    if e.kind == "tool_result":
        return f"{bar}{t}  {who}{style('← tool result' + (' (error)' if e.is_error else ''), dim=True)}" + (
            "\n" + _indent(e.output, pad) if e.output else "")
    label = e.kind + (f" · {e.model}" if e.model else "")
    color_of = {"user": "green", "assistant": "yellow", "summary": "magenta"}
    return f"{bar}{t}  {who}{style(label, fg=color_of.get(e.kind), bold=True)}\n{_indent(e.text, pad)}"


def header_text(s: SessionInfo) -> str:
    span = f"{local(s.started)} → {local(s.last_activity)}"
    gone = "" if s.file_present else " · source file gone (archived)"
    lines = [f"session  {s.session_id}", f"project  {s.project}" + (f"  ({s.cwd})" if s.cwd else "")]
    if s.parent_session_id:
        lines.append(f"parent   {s.parent_session_id}")
    lines += [f"title    {s.title or ''}".rstrip(), f"time     {span} · {s.messages} messages{gone}",
              f"resume   {s.resume}"]
    return "\n".join(lines)


def text(t: Transcript, color: bool) -> Iterable[str]:
    yield header_text(t.session)
    day = None
    for e in t.entries:
        d = local(e.timestamp)[:10] if e.timestamp else day
        if d and d != day:
            day = d
            yield "\n" + (click.style(d, underline=True) if color else f"── {d}")
        yield entry_text(e, color)


# --- Markdown ---------------------------------------------------------------------------


def _fence(body: str, lang: str = "") -> str:
    ticks = max([2, *(len(m) for m in re.findall(r"`+", body))]) + 1
    return f"{'`' * ticks}{lang}\n{body}\n{'`' * ticks}"


def _code(s: str) -> str:
    ticks = max([0, *(len(m) for m in re.findall(r"`+", s))]) + 1
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{'`' * ticks}{pad}{s}{pad}{'`' * ticks}"


def markdown(t: Transcript) -> str:
    s = t.session
    out = [f"# {_md_inline(s.title or s.session_id)}", "",
           "| | |", "|---|---|",
           f"| Session | {_code(s.session_id)} |",
           f"| Project | {_code(s.project)}" + (f" ({_code(s.cwd)})" if s.cwd else "") + " |",
           f"| Time | {local(s.started)} → {local(s.last_activity)} |",
           f"| Messages | {s.messages} |",
           f"| Resume | {_code(s.resume or '')} |", ""]
    if not s.file_present:
        out += ["_The source transcript was deleted; this is csm's archived copy._", ""]
    for e in t.entries:
        out.append(_quote(_md_entry(e), e.depth))
        out.append(_quote("", e.depth) if e.depth else "")
    return "\n".join(out).rstrip() + "\n"


def _md_inline(s: str) -> str:
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", " ".join(s.split()))


def _quote(block: str, depth: int) -> str:
    if not depth:
        return block
    prefix = "> " * depth
    return "\n".join((prefix + line).rstrip() for line in block.splitlines()) or prefix.rstrip()


def _md_entry(e: Entry) -> str:
    when = local(e.timestamp, seconds=True)
    if e.kind in ("user", "assistant", "summary"):
        label = {"user": "User", "assistant": "Assistant", "summary": "Summary"}[e.kind]
        model = f" · {_code(e.model)}" if e.model else ""
        err = " · **error**" if e.is_error else ""
        body = e.text if e.kind == "assistant" else _fence(e.text) if "\n" in e.text.strip() else _md_inline(e.text)
        thinking = f"<details><summary>thinking</summary>\n\n{e.thinking}\n\n</details>\n\n" if e.thinking else ""
        return f"#### {label} · {when}{model}{err}\n\n{thinking}{body}{_md_images(e)}".rstrip()
    if e.kind == "tool":
        err = " **(error)**" if e.is_error else ""
        line = f"- **{_md_inline(e.tool or '')}** {_code(e.detail) if e.detail else ''}{err}".rstrip()
        parts = [line]
        for title, body, lang in (("input", e.input, "json"), ("output", e.output, "")):
            if body:
                parts += ["", f"  <details><summary>{title}</summary>", "", _indent_md(_fence(body, lang)), "",
                          "  </details>"]
        return "\n".join(parts) + _indent_md(_md_images(e))
    if e.kind == "subagent":
        return f"### Subagent {_code(e.session_id or '')}" + (f": {_md_inline(e.text)}" if e.text else "")
    if e.kind == "compact":
        return f"---\n\n_conversation compacted · {when}_"
    return f"- _tool result{' (error)' if e.is_error else ''}_" + (f"\n\n{_indent_md(_fence(e.output))}"
                                                                   if e.output else "")


def _md_images(e: Entry) -> str:
    """The entry's images embedded as ``data:`` URLs: the file needs nothing beside it."""
    return "".join(f"\n\n![image {n}]({url})" for n, url in enumerate(filter(None, (i.data_url() for i in e.images)), 1))


def _indent_md(s: str) -> str:
    return "\n".join("  " + line if line else "" for line in s.splitlines())

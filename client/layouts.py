"""A conversation (``protocol.Transcript``) as terminal text, GitHub Markdown or one HTML page.

The daemon decides what the conversation is (merged responses, tool calls with their
results, nested subagents); this module only lays it out. Everything from a transcript is
data: Markdown code is fenced longer than any backtick run inside it, and HTML is escaped.
"""

from __future__ import annotations

import html
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
        body = e.text if e.kind == "assistant" else _fence(e.text) if "\n" in e.text.strip() else _md_inline(e.text)
        return f"#### {label} · {when}{model}\n\n{body}"
    if e.kind == "tool":
        err = " **(error)**" if e.is_error else ""
        line = f"- **{_md_inline(e.tool or '')}** {_code(e.detail) if e.detail else ''}{err}".rstrip()
        parts = [line]
        for title, body, lang in (("input", e.input, "json"), ("output", e.output, "")):
            if body:
                parts += ["", f"  <details><summary>{title}</summary>", "", _indent_md(_fence(body, lang)), "",
                          "  </details>"]
        return "\n".join(parts)
    if e.kind == "subagent":
        return f"### Subagent {_code(e.session_id or '')}" + (f": {_md_inline(e.text)}" if e.text else "")
    if e.kind == "compact":
        return f"---\n\n_conversation compacted · {when}_"
    return f"- _tool result{' (error)' if e.is_error else ''}_" + (f"\n\n{_indent_md(_fence(e.output))}"
                                                                   if e.output else "")


def _indent_md(s: str) -> str:
    return "\n".join("  " + line if line else "" for line in s.splitlines())


# --- HTML -------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1f2328;background:#fff}
h1{font-size:1.4rem}table.meta td{padding:.1rem .8rem .1rem 0;vertical-align:top}
code,pre{font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;white-space:pre-wrap;word-break:break-word;margin:.3rem 0}
.e{margin:.8rem 0}.who{font-weight:600}.ts{color:#59636e;font-size:.85em;margin-left:.5rem}
.text{white-space:pre-wrap;word-break:break-word}.user .who{color:#1a7f37}.assistant .who{color:#9a6700}
.summary .who{color:#8250df}.tool{margin:.2rem 0;color:#0550ae}.tool.err{color:#cf222e}
.sub{border-left:3px solid #d0d7de;padding-left:1rem;margin-left:.5rem}.sub>h3{font-size:1rem;margin:.6rem 0}
.compact{color:#59636e;text-align:center;border-top:1px dashed #d0d7de;margin:1.2rem 0}
@media (prefers-color-scheme:dark){body{background:#0d1117;color:#e6edf3}pre{background:#161b22}
.ts,.compact{color:#9198a1}.tool{color:#79c0ff}}
"""


def _h(s: str | None) -> str:
    return html.escape(s or "", quote=True)


def page(t: Transcript) -> str:
    s = t.session
    meta = [("Session", s.session_id), ("Project", s.project + (f" ({s.cwd})" if s.cwd else "")),
            ("Time", f"{local(s.started)} → {local(s.last_activity)}"), ("Messages", str(s.messages)),
            ("Resume", s.resume or "")]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_h(s.title or s.session_id)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_h(s.title or s.session_id)}</h1>", '<table class="meta">']
    out += [f"<tr><td>{k}</td><td><code>{_h(v)}</code></td></tr>" for k, v in meta]
    out.append("</table>")
    if not s.file_present:
        out.append("<p><em>The source transcript was deleted; this is csm's archived copy.</em></p>")
    depth = 0
    for e in t.entries:
        target = e.depth + (1 if e.kind == "subagent" else 0)
        while depth > e.depth:
            out.append("</section>")
            depth -= 1
        if e.kind == "subagent":
            out.append(f'<section class="sub"><h3>Subagent <code>{_h(e.session_id)}</code> {_h(e.text)}</h3>')
            depth = target
            continue
        out.append(_html_entry(e))
    out += ["</section>"] * depth
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_entry(e: Entry) -> str:
    ts = f'<span class="ts">{_h(local(e.timestamp, seconds=True))}</span>'
    if e.kind == "tool":
        summary = f'{_h(e.tool)} <code>{_h(e.detail)}</code>{" (error)" if e.is_error else ""}'
        cls = "tool err" if e.is_error else "tool"
        if not (e.input or e.output):
            return f'<div class="{cls}">→ {summary}</div>'
        body = "".join(f"<pre>{_h(x)}</pre>" for x in (e.input, e.output) if x)
        return f'<details class="{cls}"><summary>→ {summary}</summary>{body}</details>'
    if e.kind == "compact":
        return f'<div class="compact">conversation compacted {ts}</div>'
    if e.kind == "tool_result":
        return f'<details class="tool"><summary>tool result</summary><pre>{_h(e.output)}</pre></details>'
    model = f' <span class="ts">{_h(e.model)}</span>' if e.model else ""
    return (f'<div class="e {e.kind}"><div><span class="who">{e.kind.capitalize()}</span>{ts}{model}</div>'
            f'<div class="text">{_h(e.text)}</div></div>')

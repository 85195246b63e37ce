"""What pages show, as HTML pieces: Markdown, snippets, figures, the usage chart.

Everything here returns ``Markup`` built from escaped text: transcript text is shown, never run.
Markdown goes through markdown-it-py with raw HTML off (``<script>`` in a message is text) and its
default link check (no ``javascript:`` links); Markdown images stay text, so neither the page (whose
CSP would block them) nor an exported file fetches anything. A transcript's own images are shown
from their data (``Image.data_url``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup, escape


_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table").disable("image")


def markdown(text: str | None) -> Markup:
    return Markup(_md.render(text or ""))


def snippet(text: str | None) -> Markup:
    """A search snippet: csmd marks matches «…»; they become ``<mark>`` around escaped text."""
    return Markup(str(escape(text or "")).replace("«", "<mark>").replace("»", "</mark>"))


def number(v: Any) -> str:
    return "" if v is None else f"{v:,}"


def usd(v: float | None, unpriced: int = 0) -> str:
    if v is None:
        return "unpriced*"
    return f"${v:,.2f}" + ("*" if unpriced else "")


def when(ts: str | None) -> Markup:
    """A UTC timestamp as ``<time>``: shown in UTC, rewritten into the browser's zone by app.js."""
    if not ts:
        return Markup("")
    shown = ts[:16].replace("T", " ")
    return Markup(f'<time datetime="{escape(ts)}">{escape(shown)} UTC</time>')


def with_page(query: Any, page: int) -> str:
    """The page's query string (every filter) with another page number, for the pager's links."""
    from urllib.parse import urlencode

    return urlencode([*((k, v) for k, v in query.multi_items() if k not in ("page", "fragment")), ("page", page)])


def with_scope(query: Any, team: bool) -> str:
    """The view's filters on the other side of the Mine | Team switch (from its first page)."""
    from urllib.parse import urlencode

    kept = [(k, v) for k, v in query.multi_items() if k not in ("page", "fragment", "scope")]
    return urlencode([*kept, ("scope", "team")] if team else kept)


def chart(labels: Sequence[str], values: Sequence[float], unpriced: Sequence[bool], width: int = 720,
          height: int = 220) -> Markup:
    """Bars of ``values`` (tokens) under their labels, drawn here as SVG: no script, no library.

    Bars with unpriced tokens get the ``unpriced`` class (hatched in the stylesheet).
    """
    n = len(values)
    if n == 0:
        return Markup("")
    top = max(values) or 1
    pad_l, pad_b, pad_t = 56, 38, 10
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    step = plot_w / n
    bar = max(1.0, step * 0.8)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="tokens per {escape(labels[0]) if labels else ""}…" xmlns="http://www.w3.org/2000/svg">']
    for frac in (0, 0.5, 1):
        y = pad_t + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{pad_l}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}"/>'
                     f'<text class="axis" x="{pad_l - 6}" y="{y + 4:.1f}" text-anchor="end">{_short(top * frac)}</text>')
    every = max(1, n // 12)
    for i, (label, v, u) in enumerate(zip(labels, values, unpriced)):
        h = plot_h * (v / top)
        x = pad_l + i * step + (step - bar) / 2
        cls = "bar unpriced" if u else "bar"
        parts.append(f'<rect class="{cls}" x="{x:.1f}" y="{pad_t + plot_h - h:.1f}" width="{bar:.1f}" '
                     f'height="{h:.1f}"><title>{escape(label)}: {v:,.0f} tokens{" (unpriced)" if u else ""}'
                     f'</title></rect>')
        if i % every == 0:
            parts.append(f'<text class="axis" x="{x + bar / 2:.1f}" y="{height - pad_b + 16}" '
                         f'text-anchor="middle">{escape(str(label)[:12])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"

"""A conversation as HTML: the one renderer of the Session page, its live lines and ``csm export --format html``.

The templates (``entry.html``) decide how an entry looks wherever it is shown, so a line that
arrives live, the same line after a reload and the exported page cannot drift apart. The export
is one self-contained file: the stylesheet inline, images as ``data:`` URLs, no script, nothing
fetched (Markdown images are left as text; see ``views.markdown``). ``page`` takes the entries it
is given: whoever wants them changed (redacted) changes them first.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources

import jinja2
from markupsafe import Markup

from csm.shared.protocol import Entry, SessionInfo
from csm.web import views


@cache
def environment() -> jinja2.Environment:
    """The templates with autoescaping and the filters every page uses."""
    root = resources.files("csm.web")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(root / "templates")), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(markdown=views.markdown, snippet=views.snippet, number=views.number, usd=views.usd,
                       when=views.when)
    env.globals["with_page"] = views.with_page
    env.globals["with_scope"] = views.with_scope
    return env


@cache
def _css() -> str:
    return resources.files("csm.web").joinpath("static", "style.css").read_text(encoding="utf-8")


def page(info: SessionInfo, entries: Sequence[Entry]) -> str:
    """The conversation as one HTML file that opens offline: the Session page's entries, its stylesheet inline."""
    html = environment().get_template("export.html").render(
        info=info, entries=entries, css=Markup(_css()), resume=info.resume or "")
    return html

"""Shared by the web tests (test_web, test_web_team): ``csm serve`` started for real, in a real Chromium
(the ``browser`` fixture is in conftest.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

from csmtest import wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 10_000


@dataclass
class Served:
    base: str
    url: str
    """The URL csm serve printed: it carries the token."""
    token: str
    port: int


@contextmanager
def serve(env: dict[str, str], out: Path) -> Iterator[Served]:
    """``csm serve --port 0`` with ``env`` until the block ends; its output (in ``out``) has no traceback."""
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "csm.client", "serve", "--port", "0"], stdout=f,
                                stderr=subprocess.STDOUT, env=env)
    try:
        url = wait_for(lambda: re.search(r"http://\S+token=\S+", out.read_text()), 20, "csm serve's URL").group(0)
        m = re.match(r"(http://127\.0\.0\.1:(\d+))/\?token=(\S+)", url)
        assert m, url
        yield Served(base=m.group(1), url=url, token=m.group(3), port=int(m.group(2)))
    finally:
        proc.terminate()
        proc.wait(10)
    assert "Traceback" not in out.read_text(), out.read_text()


@contextmanager
def signed_in(browser: Browser, url: str, base: str) -> Iterator[Page]:
    """A fresh browser context that opened the printed URL once: it holds the token's cookie."""
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": 1100, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    p = ctx.new_page()
    p.goto(url)
    expect(p).to_have_url(base + "/")
    try:
        yield p
    finally:
        ctx.close()

"""``csm serve`` in a real headless Chromium (Debian's, driven by Playwright) against a real csmd
on the real fixtures: pages, live updates, privacy. One csmd and one ``csm serve`` for the module."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lines import prompt, record, response
from csmtest import REAL, Csmd, run_csm
from webtest import TIMEOUT_MS, serve, signed_in

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

SHOT = os.environ.get("CSM_SCREENSHOT")  # where to keep the sessions page's picture: docs/web.png (README's)


@dataclass
class Site:
    base: str
    url: str
    """The URL csm serve printed: it carries the token."""
    token: str
    port: int
    env: dict[str, str]
    projects: Path
    csmd: Csmd
    tmp: Path

    def csm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_csm(*args, env=self.env)


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This module's own isolation (it replaces conftest's per test): one home for the shared csmd."""
    tmp = tmp_path_factory.mktemp("web")
    run = Path(tempfile.mkdtemp(prefix="csm-", dir="/tmp"))
    run.chmod(0o700)
    (tmp / "home").mkdir()
    env = {"HOME": str(tmp / "home"), "XDG_DATA_HOME": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "config"),
           "XDG_STATE_HOME": str(tmp / "state"), "XDG_CACHE_HOME": str(tmp / "cache"), "XDG_RUNTIME_DIR": str(run),
           "CLAUDE_CONFIG_DIR": str(tmp / "claude"), "CSM_RAISE_ERRORS": "", "TZ": "UTC"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("NOTIFY_SOCKET", raising=False)
        yield tmp
    shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="module")
def site(isolated: Path) -> Iterator[Site]:
    projects = isolated / "claude" / "projects"
    shutil.copytree(REAL, projects)
    (projects / "SOURCES.md").unlink()
    csmd = Csmd(isolated).start()
    try:
        with serve(dict(os.environ), isolated / "serve.out") as s:
            yield Site(base=s.base, url=s.url, token=s.token, port=s.port, env=dict(os.environ),
                       projects=projects, csmd=csmd, tmp=isolated)
    finally:
        if csmd.alive:
            assert csmd.stop() == 0, csmd.log()


@pytest.fixture
def page(site: Site, browser: Browser) -> Iterator[Page]:
    with signed_in(browser, site.url, site.base) as p:
        yield p


def jline(**obj: Any) -> str:
    return record(obj, newline=True).decode()


def user(session: str, n: int, text: str) -> str:
    return record(prompt(f"u-{session}-{n}", session, f"2026-03-01T10:00:{n:02d}.000Z", text,
                         cwd="/home/me/it's here"), newline=True).decode()


def assistant(session: str, n: int, text: str) -> str:
    return record(response(f"a-{session}-{n}", session, f"2026-03-01T10:00:{n:02d}.000Z",
                           {"id": f"m-{session}-{n}", "model": "claude-test-1", "content": [{"type": "text", "text": text}]},
                           f"r-{session}-{n}"), newline=True).decode()


def png(width: int, height: int) -> str:
    """A real PNG (grey pixels), base64, as Claude Code stores a pasted screenshot."""
    import base64
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return base64.b64encode(raw).decode()


def image_session(session: str) -> str:
    """A pasted picture with its prompt; a tool whose result is a screenshot; an SVG (never passed on)."""
    picture = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(3, 2)}}
    svg = {"type": "image", "source": {"type": "base64", "media_type": "image/svg+xml", "data": "PHN2Zy8+"}}
    return (jline(type="user", uuid=f"u-{session}", sessionId=session, timestamp="2026-03-01T10:00:01.000Z",
                  message={"role": "user", "content": [picture, svg, {"type": "text", "text": "what is this?"}]})
            + jline(type="assistant", uuid=f"a-{session}", sessionId=session, timestamp="2026-03-01T10:00:02.000Z",
                    message={"id": f"m-{session}", "role": "assistant", "model": "claude-test-1", "content": [
                        {"type": "tool_use", "id": f"t-{session}", "name": "Screenshot", "input": {}}]})
            + jline(type="user", uuid=f"r-{session}", sessionId=session, timestamp="2026-03-01T10:00:03.000Z",
                    message={"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t-{session}",
                                                          "content": [picture]}]}))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def synced(site: Site) -> None:
    r = site.csm("sync", "--now")
    assert r.returncode == 0, r.stderr


def raw_get(site: Site, path: str, host: str | None = None, cookie: bool = True, method: str = "GET",
            body: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    headers = {"Host": host or f"127.0.0.1:{site.port}"}
    if cookie:
        headers["Cookie"] = f"csm_token_{site.port}={site.token}"
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read().decode()


# --- pages -----------------------------------------------------------------------------


def test_status_page_shows_csmd_figures_and_the_same_as_json(site: Site, page: Page) -> None:
    status = json.loads(site.csm("status", "--json").stdout)
    expect(page.locator("h1")).to_have_text("Status")
    expect(page.locator('[data-field="sessions"]')).to_have_text(f"{status['sessions']:,}")
    expect(page.locator('[data-field="errors"]')).to_have_text(str(status["errors"]))
    expect(page.locator('[data-field="state"]')).to_have_text(re.compile("watching|idle|polling"))
    api = page.request.get(site.base + "/api/status").json()
    assert (api["sessions"], api["files"], api["pid"]) == (status["sessions"], status["files"], status["pid"])
    csp = page.request.get(site.base + "/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp


def test_sync_now_runs_and_the_page_shows_it_finishing(site: Site, page: Page) -> None:
    write(site.projects / "spotter" / "synced.jsonl", user("synced", 1, "written while csm looked away"))
    page.click("#sync-now")
    expect(page.locator("#sync-result")).to_contain_text(re.compile(r"sync finished: scanned \d+ files"))
    expect(page.locator("#sync-now")).to_be_enabled()
    assert any(r["session_id"] == "synced" for r in json.loads(site.csm("query", "sessions", "--json").stdout))


def test_sessions_list_filters_by_project_and_title_words_in_the_url(site: Site, page: Page) -> None:
    if SHOT:
        page.set_viewport_size({"width": 960, "height": 600})
        page.goto(site.base + "/sessions")
        expect(page.locator("#sessions tbody tr").first).to_be_visible()
        page.screenshot(path=SHOT)
    page.goto(site.base + "/sessions?project=SPOTTER")
    want = json.loads(site.csm("query", "sessions", "-p", "spotter", "--json").stdout)
    rows = page.locator("#sessions tbody tr")
    expect(rows).to_have_count(len(want))
    assert set(rows.locator(".project").all_inner_texts()) == {"spotter"}
    expect(page.locator("nav.scope")).to_have_count(0)  # no [team]: no Mine | Team switch
    page.goto(site.base + "/sessions?scope=team")  # a bookmark from a team member's page: one line, why
    expect(page.locator(".team-down")).to_contain_text("team mode is off")
    expect(page.locator("nav.scope")).to_have_count(0)
    page.goto(site.base + "/sessions?project=SPOTTER")
    page.fill('input[name="title"]', "PHX server")
    page.click(".filters button")
    expect(page).to_have_url(re.compile(r"title=PHX\+server"))
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".title a")).to_have_text("mix phx.server doesnt seem to start")
    page.goto(site.base + "/sessions?project=spotter&page=2")  # past the end: empty, with a way back
    expect(page.locator('.pager a[rel="prev"]')).to_have_attribute("href", "?project=spotter&page=1")
    page.goto(site.base + "/sessions?since=nonsense")
    expect(page.locator(".error")).to_contain_text("since:")


def test_sessions_list_shows_models_subagents_tokens_and_cost(site: Site, page: Page) -> None:
    page.goto(site.base + "/sessions?project=claude_p")
    row = page.locator(f'#sessions tr[data-session="{SUB_PARENT}"]')
    expect(row.locator(".models")).to_have_text("claude-haiku-4-5-20251001, claude-opus-4-5-20251101")
    expect(row.locator(".subagents")).to_have_text("1")
    want = next(r for r in json.loads(site.csm("query", "sessions", "--json").stdout) if r["session_id"] == SUB_PARENT)
    assert want["tokens"] > 0 and want["subagents"] == 1
    expect(row.locator("td.num").nth(1)).to_have_text(f"{want['tokens']:,}")
    expect(row.locator("td.num").nth(2)).to_have_text(re.compile(r"^\$\d+\.\d\d\*?$"))


def test_a_search_hit_opens_the_session_at_the_hit(site: Site, page: Page) -> None:
    page.goto(site.base + "/search?q=phx")
    hit = page.locator(".hits li a").first
    expect(page.locator(".hits mark").first).to_have_text(re.compile("phx", re.I))
    hit.click()
    expect(page).to_have_url(re.compile(r"/session/[^?]+\?at="))
    marked = page.locator(".entry.hit")
    expect(marked).to_have_count(1)
    expect(marked).to_contain_text(re.compile("phx", re.I))
    expect(marked).to_be_in_viewport()


def test_a_session_page_renders_markdown_tools_and_the_resume_command(site: Site, page: Page) -> None:
    page.goto(site.base + "/session/short")
    expect(page.locator("#resume")).to_have_text("cd '/home/marco/projects/spotter' && claude --resume short")
    tool = page.locator(".entry.tool details").first
    expect(tool.locator("summary")).to_contain_text("Bash")
    expect(tool.locator("pre").first).not_to_be_visible()
    tool.locator("summary").click()
    expect(tool.locator("pre").first).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 800})  # a phone: nothing wider than the screen
    for path in ("/session/short", "/sessions", "/", "/usage?tz=UTC", "/settings"):
        page.goto(site.base + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    r = page.request.get(site.base + "/session/short/export.jsonl")
    assert r.status == 200 and r.body() == (site.projects / "spotter" / "short.jsonl").read_bytes()


SUB_PARENT = "29ccd257-68b1-427f-ae5f-6524b7cb6f20"  # a real transcript: a Task call that ran a subagent


def test_a_session_page_shows_thinking_collapsed_images_errors_and_subagents_under_their_call(
        site: Site, page: Page) -> None:
    page.goto(site.base + "/session/short")
    thinking = page.locator(".entry.assistant details.thinking")
    expect(thinking).to_have_count(1)
    body = thinking.locator(".text")
    expect(body).not_to_be_visible()  # collapsed
    thinking.locator("summary").click()
    expect(body).to_contain_text("The user is having trouble starting their Phoenix server")
    failed = page.locator(".entry.tool.failed")
    expect(failed.first.locator("summary")).to_contain_text("Bash")
    expect(failed.first.locator(".badge.err")).to_have_text("error")

    write(site.projects / "spotter" / "pictures.jsonl", image_session("pictures"))
    synced(site)
    page.goto(site.base + "/session/pictures")
    pasted = page.locator('.entry.user .images img[src^="data:image/png;base64,"]')
    expect(pasted).to_have_count(1)
    assert page.evaluate("(i) => i.decode().then(() => i.naturalWidth)", pasted.element_handle()) == 3, \
        "the picture decoded: the CSP lets data: images load"
    expect(page.locator('.entry.tool .images img[src^="data:image/png;base64,"]')).to_have_count(1)
    expect(page.locator("img:not([src^='data:'])")).to_have_count(0)  # the SVG is not passed on

    write(site.projects / "spotter" / "overloaded.jsonl", user("overloaded", 1, "hello?") + jline(
        type="assistant", uuid="a-overloaded", sessionId="overloaded", timestamp="2026-03-01T10:00:02.000Z",
        isApiErrorMessage=True, message={"id": "m-ov", "role": "assistant", "model": "<synthetic>",
                                         "content": [{"type": "text", "text": "API Error: 529 Overloaded"}]}))
    synced(site)
    page.goto(site.base + "/session/overloaded")
    expect(page.locator(".entry.assistant.failed .badge.err")).to_have_text("error")

    page.goto(site.base + f"/session/{SUB_PARENT}")
    task = page.locator(".entry.tool", has=page.locator("summary b", has_text="Task")).first
    sub = task.locator("xpath=following-sibling::article[1]")
    expect(sub).to_have_class(re.compile(r"\bsubagent\b"))
    expect(sub).to_contain_text("agent-a2271d1")
    expect(sub.locator("xpath=following-sibling::article[1]")).to_have_class(re.compile(r"\bdepth-1\b"))


def test_a_long_session_comes_a_page_at_a_time_and_a_hit_opens_its_page(site: Site, page: Page) -> None:
    lines = "".join(jline(type="user", uuid=f"u-long-{n}", sessionId="long", message={"role": "user",
                          "content": f"prompt number {n}"}, timestamp=f"2026-03-02T{n // 3600:02d}:{n // 60 % 60:02d}:"
                          f"{n % 60:02d}.000Z") for n in range(450))
    write(site.projects / "spotter" / "long.jsonl", lines)
    synced(site)
    page.goto(site.base + "/session/long")
    entries = page.locator("#entries .entry")
    expect(entries).to_have_count(200)
    expect(page.locator(".pager span")).to_have_text("entries 1–200, more follow")  # csmd read no further
    page.click('.pager a[rel="next"]')
    expect(entries.first).to_have_attribute("id", "m-200")
    expect(page.locator(".pager span")).to_have_text("entries 201–400 of 450")
    page.goto(site.base + "/session/long?page=99")  # past the end: the last page
    expect(entries).to_have_count(50)
    expect(entries.last).to_contain_text("prompt number 449")
    page.goto(site.base + "/session/long?at=2026-03-02T00:05:10.000Z")  # entry 310, as a search hit links it
    hit = page.locator(".entry.hit")
    expect(hit).to_have_attribute("id", "m-310")
    expect(hit).to_be_in_viewport()
    expect(page.locator(".pager span")).to_have_text("entries 201–400 of 450")


def test_a_line_appended_while_its_page_is_open_appears_without_a_reload(site: Site, page: Page) -> None:
    path = site.projects / "spotter" / "live.jsonl"
    write(path, user("live", 1, "first prompt of the live session"))
    synced(site)
    page.goto(site.base + "/session/live")
    page.evaluate("window.notReloaded = true")
    expect(page.locator("#entries .entry")).to_have_count(1)
    write(path, assistant("live", 2, "the **answer** written while the page is open"))
    added = page.locator("#entries .entry.assistant")
    expect(added).to_contain_text("the answer written while the page is open")
    expect(added.locator("strong")).to_have_text("answer")
    assert page.evaluate("window.notReloaded") is True

    # A subagent the session starts while its page is open: its file is new, its key is not the page's.
    sub = site.projects / "spotter" / "live" / "subagents" / "agent-b7e21.jsonl"
    write(sub, jline(type="user", uuid="u-live-sub", sessionId="live", isSidechain=True, agentId="b7e21",
                     timestamp="2026-03-01T10:00:03.000Z",
                     message={"role": "user", "content": "the subagent's own task, started later"}))
    expect(page.locator("#entries")).to_contain_text("the subagent's own task, started later")
    assert page.evaluate("window.notReloaded") is True

    page.goto(site.base + "/sessions?project=spotter")
    expect(page.locator('tr[data-session="brand-new"]')).to_have_count(0)
    write(site.projects / "spotter" / "brand-new.jsonl", user("brand-new", 1, "a session started just now"))
    expect(page.locator('tr[data-session="brand-new"]')).to_contain_text("a session started just now")


ENTRIES_HTML = """() => Array.from(document.querySelectorAll('#entries > article')).map((a) => {
  const x = a.cloneNode(true);
  x.classList.remove('new', 'selected');
  x.querySelectorAll('details[open]').forEach((d) => d.removeAttribute('open'));
  return x.outerHTML;
})"""


def tool_call(session: str, n: int, command: str) -> str:
    return jline(type="assistant", uuid=f"t-{session}-{n}", sessionId=session,
                 timestamp=f"2026-03-01T10:00:{n:02d}.000Z", requestId=f"r-{session}-{n}",
                 message={"id": f"m-{session}-{n}", "role": "assistant", "model": "claude-test-1", "content": [
                     {"type": "tool_use", "id": f"call-{session}-{n}", "name": "Bash", "input": {"command": command}}]})


def tool_result(session: str, n: int, call: int, output: str) -> str:
    return jline(type="user", uuid=f"r-{session}-{n}", sessionId=session, timestamp=f"2026-03-01T10:00:{n:02d}.000Z",
                 message={"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"call-{session}-{call}",
                                                       "content": output}]})


def test_live_lines_carry_full_detail_and_look_as_after_a_reload(site: Site, page: Page) -> None:
    """csmd's watch stream carries no tool input or output and cuts text at 2,000 characters; the page
    shows what a reload shows: the whole answer, the call's input, its result attached to it."""
    path = site.projects / "spotter" / "detail.jsonl"
    write(path, user("detail", 1, "start"))
    synced(site)
    page.goto(site.base + "/session/detail")
    page.evaluate("window.notReloaded = true")
    long = " ".join(f"w{i}" for i in range(1500)) + " THE END"  # > 2,000 characters
    write(path, assistant("detail", 2, long) + tool_call("detail", 3, "ls -la /the/folder"))
    answer = page.locator("#entries .entry.assistant .text")
    expect(answer).to_contain_text("w1499 THE END")
    call = page.locator("#entries .entry.tool")
    expect(call.locator("pre").first).to_have_text(re.compile(r'"command": "ls -la /the/folder"'))
    write(path, tool_result("detail", 4, 3, "total 0, the folder's listing"))
    expect(call.locator("pre").nth(1)).to_have_text("total 0, the folder's listing")
    expect(page.locator("#entries .entry.tool_result")).to_have_count(0)  # attached to its call, as on a reload
    live = page.evaluate(ENTRIES_HTML)
    assert page.evaluate("window.notReloaded") is True
    page.reload()
    expect(call.locator("pre").nth(1)).to_have_text("total 0, the folder's listing")
    assert page.evaluate(ENTRIES_HTML) == live


def test_follow_keeps_the_newest_entry_in_view(site: Site, page: Page) -> None:
    path = site.projects / "spotter" / "follow.jsonl"
    write(path, "".join(user("follow", n, f"message {n}\n\n" + "a long line of words " * 40) for n in range(1, 31)))
    synced(site)
    page.goto(site.base + "/session/follow")
    expect(page.locator("#entries .entry")).to_have_count(30)
    write(path, user("follow", 31, "the first newest, not followed"))
    newest = page.locator("#entries .entry").last
    expect(newest).to_contain_text("the first newest, not followed")
    expect(newest).not_to_be_in_viewport()
    assert page.evaluate("window.scrollY") == 0, "without follow the reader's place is kept"
    page.check("#follow")
    write(path, user("follow", 32, "the second newest, followed"))
    expect(newest).to_contain_text("the second newest, followed")
    expect(newest).to_be_in_viewport()


def exported_session(session: str) -> str:
    """Prompt with a picture; an answer with thinking, Markdown and a code block; a failing tool call."""
    answer = "The **fix**:\n\n```python\ndef double(x):\n    return x * 2\n```\n\nThen run `make`."
    return (image_session(session)
            + jline(type="assistant", uuid=f"th-{session}", sessionId=session, timestamp="2026-03-01T10:00:04.000Z",
                    message={"id": f"m2-{session}", "role": "assistant", "model": "claude-test-1", "content": [
                        {"type": "thinking", "thinking": "Let me think about *doubling*.", "signature": "x"}]})
            + jline(type="assistant", uuid=f"tx-{session}", sessionId=session, timestamp="2026-03-01T10:00:04.000Z",
                    message={"id": f"m2-{session}", "role": "assistant", "model": "claude-test-1", "content": [
                        {"type": "text", "text": answer}]})
            + tool_call(session, 5, "make test")
            + jline(type="user", uuid=f"e-{session}", sessionId=session, timestamp="2026-03-01T10:00:06.000Z",
                    message={"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"call-{session}-5",
                                                          "content": "make: *** no rule", "is_error": True}]}))


def test_the_html_export_is_the_session_page_offline_in_one_file(site: Site, browser: Browser) -> None:
    write(site.projects / "spotter" / "exported.jsonl", exported_session("exported"))
    synced(site)
    out = site.tmp / "exported.html"
    r = site.csm("export", "exported", "--format", "html", "-o", str(out))
    assert r.returncode == 0, r.stderr
    ctx = browser.new_context(offline=True)
    ctx.set_default_timeout(TIMEOUT_MS)
    p = ctx.new_page()
    asked: list[str] = []
    p.on("request", lambda req: asked.append(req.url))
    p.goto(out.as_uri())
    answer = p.locator(".entry.assistant .text").last
    expect(answer.locator("strong")).to_have_text("fix")  # Markdown rendered
    expect(answer.locator("pre code")).to_have_text("def double(x):\n    return x * 2\n")
    thinking = p.locator(".entry.assistant details.thinking")
    expect(thinking.locator(".text")).not_to_be_visible()
    thinking.locator("summary").click()
    expect(thinking.locator(".text em")).to_have_text("doubling")
    pasted = p.locator(".entry.user .images img")
    assert p.evaluate("(i) => i.decode().then(() => i.naturalWidth)", pasted.element_handle()) == 3
    failed = p.locator(".entry.tool.failed")
    expect(failed.locator("pre").first).not_to_be_visible()
    failed.locator("summary").click()
    expect(failed.locator("pre").first).to_contain_text('"command": "make test"')
    expect(failed.locator("pre.err")).to_have_text("make: *** no rule")
    assert p.evaluate("getComputedStyle(document.body).margin") == "0px", "the stylesheet is inline"
    nested = site.tmp / "nested.html"
    assert site.csm("export", SUB_PARENT[:8], "--format", "html", "-o", str(nested)).returncode == 0
    p.goto(nested.as_uri())
    task = p.locator(".entry.tool", has=p.locator("summary b", has_text="Task")).first
    sub = task.locator("xpath=following-sibling::article[1]")
    expect(sub).to_have_class(re.compile(r"\bsubagent\b"))
    expect(sub.locator("xpath=following-sibling::article[1]")).to_have_class(re.compile(r"\bdepth-1\b"))
    assert all(u.startswith(("file:", "data:")) for u in asked), asked
    assert p.locator("script, link").count() == 0
    ctx.close()


def test_the_markdown_export_keeps_code_blocks_thinking_and_images(site: Site) -> None:
    write(site.projects / "spotter" / "exported-md.jsonl", exported_session("exported-md"))
    synced(site)
    r = site.csm("export", "exported-md", "--format", "markdown")
    assert r.returncode == 0, r.stderr
    md = r.stdout
    assert "```python\ndef double(x):\n    return x * 2\n```" in md
    assert "<details><summary>thinking</summary>\n\nLet me think about *doubling*.\n\n</details>" in md
    assert "![image 1](data:image/png;base64," in md
    assert "**Bash** `make test` **(error)**" in md and "make: *** no rule" in md


def test_a_message_holding_script_is_shown_as_text_never_run(site: Site, page: Page) -> None:
    evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> and [x](javascript:alert(1))'
    write(site.projects / "spotter" / "evil.jsonl", user("evil", 1, evil))
    synced(site)
    page.goto(site.base + "/session/evil")
    text = page.locator("#entries .entry.user .text")
    expect(text).to_contain_text("<script>window.pwned = 1</script>")
    expect(text).to_contain_text('<img src=x onerror="window.pwned = 2">')
    assert text.locator("script, img").count() == 0
    assert text.locator('a[href^="javascript"]').count() == 0
    assert page.evaluate("window.pwned") is None


def test_a_session_id_in_two_places_lists_both_and_each_opens(site: Site, page: Page) -> None:
    for folder, words in (("-home-me-a", "the first copy"), ("-home-me-b", "the second copy")):
        write(site.projects / folder / "twin.jsonl", user("twin", 1, words))
    synced(site)
    page.goto(site.base + "/session/twin")
    places = page.locator(".places a")
    expect(places).to_have_count(2)
    expect(page.locator("h1")).to_contain_text("ambiguous")
    places.nth(1).click()
    expect(page.locator("#entries .entry.user")).to_contain_text("the second copy")


def events(site: Site, last_id: int | None = None) -> Iterator[tuple[int | None, str, Any]]:
    """A page's event stream read raw: (id, event, data) as they come; each read waits at most 10 s."""
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    headers = {"Host": f"127.0.0.1:{site.port}", "Cookie": f"csm_token_{site.port}={site.token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    conn.request("GET", "/events?page=session&sessions=replayed", headers=headers)
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type", "").startswith("text/event-stream")
    try:
        fields: dict[str, str] = {}
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
            elif "event" in fields:
                yield (int(fields["id"]) if "id" in fields else None, fields["event"], json.loads(fields["data"]))
                fields = {}
            else:
                fields = {}
    finally:
        conn.close()


def test_a_stream_reconnecting_with_last_event_id_gets_what_it_missed_or_is_told_to_reload(site: Site) -> None:
    path = site.projects / "spotter" / "replayed.jsonl"
    write(path, user("replayed", 1, "before"))
    synced(site)
    first = events(site)
    assert next(first)[1] == "csmd"
    write(path, user("replayed", 2, "missed by a page that was away"))
    got = next(e for e in first if e[1] == "entry")
    assert got[0] is not None and "missed by a page that was away" in got[2]["text"]
    first.close()
    again = events(site, last_id=got[0] - 1)
    replayed = next(again)
    assert replayed[:2] == got[:2] and replayed[2]["text"] == got[2]["text"]
    again.close()
    lost = events(site, last_id=got[0] + 10**6)  # an id this server never gave (it restarted): reload
    assert next(lost)[1] == "dropped"
    lost.close()


# --- private by default ------------------------------------------------------------------


def test_without_the_token_every_request_is_forbidden(site: Site, browser: Browser) -> None:
    ctx = browser.new_context()
    try:
        p = ctx.new_page()
        for path in ("/", "/sessions", "/api/status", "/static/app.js", "/events"):
            r = p.goto(site.base + path)
            assert r is not None and r.status == 403, path
        r = p.goto(site.base + "/?token=wrong")
        assert r is not None and r.status == 403
    finally:
        ctx.close()
    # With the cookie, a POST still needs the token itself (a field or header): the cookie alone is not enough.
    assert raw_get(site, "/sync", method="POST", body="")[0] == 403
    assert raw_get(site, "/settings", method="POST", body="rescan_interval_s=1")[0] == 403


def test_a_foreign_host_header_is_refused(site: Site) -> None:
    status, text = raw_get(site, "/api/status", host=f"evil.example:{site.port}")
    assert status == 421 and "Host" in text
    assert raw_get(site, "/api/status", host=f"localhost:{site.port}")[0] == 200


def test_the_settings_page_changes_the_rescan_interval_and_csm_config_show_reports_it(site: Site,
                                                                                     page: Page) -> None:
    page.goto(site.base + "/settings")
    page.fill("#rescan_interval_s", "-3")
    page.click(".settings button")
    expect(page.locator("#settings-error")).to_contain_text("bad value for 'rescan_interval_s'")
    cfg = Path(site.env["XDG_CONFIG_HOME"]) / "csm" / "config.toml"
    assert not cfg.exists(), "a refused value writes nothing"
    page.fill("#rescan_interval_s", "17")
    page.click(".settings button")
    expect(page.locator("#settings-message")).to_contain_text("applied: rescan_interval_s")
    shown = json.loads(site.csm("config", "show", "--json").stdout)
    assert shown["from"] == "csmd"
    assert shown["settings"]["rescan_interval_s"] == {"value": 17.0, "source": "file", "where": f"{cfg}:1"}
    expect(page.locator('tr[data-key="rescan_interval_s"] .source')).to_contain_text(f"file ({cfg}:1)")


def test_usage_page_groups_days_in_the_browsers_zone_with_a_chart_and_a_table(site: Site, browser: Browser) -> None:
    ctx = browser.new_context(timezone_id="Asia/Kathmandu")
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        page = ctx.new_page()
        page.goto(site.url)
        zone = page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")  # ICU may say Asia/Katmandu
        assert zone in ("Asia/Kathmandu", "Asia/Katmandu")
        page.goto(site.base + "/usage?by=day")
        expect(page.locator("main")).to_contain_text(f"Days, weeks and months in {zone}")
        expect(page).to_have_url(re.compile("tz=" + zone.replace("/", "%2F")))
        want = json.loads(site.csm("query", "usage", "--by", "day", "--tz", zone, "--json").stdout)
        rows = page.locator("table.usage tbody tr")
        expect(rows).to_have_count(len(want))
        expect(rows.first.locator("td").first).to_have_text(want[0]["day"])
        expect(page.locator("svg.chart rect.bar")).to_have_count(len(want))
        page.goto(site.base + "/usage?by=model&tz=Asia/Kathmandu")
        expect(page.locator("td.unpriced").first).to_have_text("unpriced*")
    finally:
        ctx.close()


def test_when_csmd_stops_the_page_says_how_to_start_it_and_recovers(site: Site, page: Page) -> None:
    site.csmd.stop()
    page.goto(site.base + "/")
    expect(page.locator("#csmd-down")).to_contain_text("csmd is not running")
    expect(page.locator("#csmd-down code").first).to_have_text("csmd")
    site.csmd.start()
    expect(page.locator("h1")).to_have_text("Status", timeout=30_000)

"""``csm serve`` in a real headless Chromium (Debian's, driven by Playwright) against a real csmd
on the real fixtures: pages, live updates, privacy. One csmd and one ``csm serve`` for the module."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lines import prompt, record, response
from csmtest import REAL, Csmd, run_csm, wait_for

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 10_000
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
    out = isolated / "serve.out"
    with open(out, "wb") as f:
        serve = subprocess.Popen([sys.executable, "-m", "csm.client", "serve", "--port", "0"], stdout=f,
                                 stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        url = wait_for(lambda: re.search(r"http://\S+token=\S+", out.read_text()), 20, "csm serve's URL").group(0)
        m = re.match(r"(http://127\.0\.0\.1:(\d+))/\?token=(\S+)", url)
        assert m, url
        yield Site(base=m.group(1), url=url, token=m.group(3), port=int(m.group(2)), env=dict(os.environ),
                   projects=projects, csmd=csmd, tmp=isolated)
    finally:
        serve.terminate()
        serve.wait(10)
        if csmd.alive:
            assert csmd.stop() == 0, csmd.log()
    assert "Traceback" not in out.read_text(), out.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(site: Site, browser: Browser) -> Iterator[Page]:
    """A fresh browser context that opened the printed URL once: it holds the token's cookie."""
    ctx = browser.new_context(viewport={"width": 1100, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    p = ctx.new_page()
    p.goto(site.url)
    expect(p).to_have_url(site.base + "/")
    yield p
    ctx.close()


def user(session: str, n: int, text: str) -> str:
    return record(prompt(f"u-{session}-{n}", session, f"2026-03-01T10:00:{n:02d}.000Z", text,
                         cwd="/home/me/it's here"), newline=True).decode()


def assistant(session: str, n: int, text: str) -> str:
    return record(response(f"a-{session}-{n}", session, f"2026-03-01T10:00:{n:02d}.000Z",
                           {"id": f"m-{session}-{n}", "model": "claude-test-1", "content": [{"type": "text", "text": text}]},
                           f"r-{session}-{n}"), newline=True).decode()


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
    page.fill('input[name="title"]', "PHX server")
    page.click(".filters button")
    expect(page).to_have_url(re.compile(r"title=PHX\+server"))
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".title a")).to_have_text("mix phx.server doesnt seem to start")
    page.goto(site.base + "/sessions?project=spotter&page=2")  # past the end: empty, with a way back
    expect(page.locator('.pager a[rel="prev"]')).to_have_attribute("href", "?project=spotter&page=1")
    page.goto(site.base + "/sessions?since=nonsense")
    expect(page.locator(".error")).to_contain_text("since:")


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

    page.goto(site.base + "/sessions?project=spotter")
    expect(page.locator('tr[data-session="brand-new"]')).to_have_count(0)
    write(site.projects / "spotter" / "brand-new.jsonl", user("brand-new", 1, "a session started just now"))
    expect(page.locator('tr[data-session="brand-new"]')).to_contain_text("a session started just now")


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
    assert got[0] is not None and "missed by a page that was away" in got[2]["html"]
    first.close()
    again = events(site, last_id=got[0] - 1)
    replayed = next(again)
    assert replayed[:2] == got[:2] and replayed[2]["html"] == got[2]["html"]
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

"""The web pages' "Mine | Team" switch (issue 16) in a real Chromium: two members' csmd mirror into a
real PostgreSQL (``pgcluster``), and ``csm serve`` runs as alice. One cluster, two members and one
``csm serve`` for the module; the test that stops PostgreSQL runs last."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

from csmtest import run_csm  # noqa: E402
from pgcluster import Cluster  # noqa: E402
from teamtest import Member, generate, needs_postgres, new_teamdb  # noqa: E402
from webtest import Served, serve, signed_in  # noqa: E402

pytestmark = needs_postgres


@dataclass
class Team:
    alice: Member
    bob: Member
    site: Served


@pytest.fixture(scope="module")
def team(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp("webteam")
    db = new_teamdb(cluster)
    alice = Member(tmp, cluster, db, "alice", "alice-laptop")
    bob = Member(tmp, cluster, db, "bob", "bob-desktop")
    generate(alice.projects / "-home-alice-zoo" / "alice-s1.jsonl", 3, "alice")
    generate(bob.projects / "-home-bob-farm" / "bob-s1.jsonl", 2, "bob")
    generate(bob.projects / "-home-bob-farm" / "bob-s2.jsonl", 1, "bob2")
    try:
        for m in (alice, bob):
            m.start()
        for m in (alice, bob):
            m.caught_up()
        with serve(alice.env, tmp / "serve.out") as site:
            yield Team(alice, bob, site)
    finally:
        for m in (alice, bob):
            m.stop()


@pytest.fixture
def page(team: Team, browser: Browser) -> Iterator[Page]:
    with signed_in(browser, team.site.url, team.site.base) as p:
        yield p


def test_the_switch_shows_both_members_on_team_and_only_mine_on_mine(team: Team, page: Page) -> None:
    base = team.site.base
    page.goto(base + "/sessions")
    rows = page.locator("#sessions tbody tr.item")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-session", "alice-s1")
    page.click("nav.scope >> text=Team")
    expect(page).to_have_url(re.compile(r"/sessions\?scope=team$"))
    expect(rows).to_have_count(3)
    assert sorted(rows.locator(".member").all_inner_texts()) == ["alice", "bob", "bob"]
    assert set(rows.locator(".machine").all_inner_texts()) == {"alice-laptop", "bob-desktop"}
    page.fill('input[name="project"]', "farm")  # filtering keeps the view on the team's side
    page.click(".filters button")
    expect(page).to_have_url(re.compile(r"scope=team"))
    expect(rows).to_have_count(2)

    # Usage by member: each member's row is that member's own local report, to the token.
    page.goto(base + "/usage?scope=team&by=member")
    table = page.locator("table.usage tbody tr.item")
    expect(table).to_have_count(2)
    cells = [r.locator("td").all_inner_texts() for r in table.all()]
    for m, cells_of in zip((team.alice, team.bob), cells, strict=True):
        local = m.csm("query", "usage", "--by", "model", "--tz", "UTC")
        assert cells_of[0] == m.name
        assert cells_of[1] == f"{sum(r['responses'] for r in local):,}"
        assert cells_of[6] == f"{sum(r['total_tokens'] for r in local):,}"
    page.click("nav.scope >> text=Mine")
    expect(page).to_have_url(re.compile(r"/usage\?by=member$"))  # not a group of mine: by day
    mine = page.locator("table.usage tbody tr.item")
    expect(mine).to_have_count(3)  # alice's three days
    assert sum(int(r.locator("td").nth(1).inner_text()) for r in mine.all()) == 3

    # Search: the team's PostgreSQL full-text search finds both members' lines, marked as mine are.
    page.goto(base + "/search?q=zebras&scope=team")
    hits = page.locator(".hits li.hit-row")
    expect(hits).to_have_count(6)
    assert set(hits.locator(".member").all_inner_texts()) == {"alice@alice-laptop", "bob@bob-desktop"}
    expect(hits.first.locator("mark")).to_have_text(re.compile("zebra", re.I))
    page.click("nav.scope >> text=Mine")
    expect(hits).to_have_count(3)


def test_postgres_stopped_the_team_view_says_so_in_one_line_and_mine_still_works(
        team: Team, cluster: Cluster, page: Page) -> None:
    cluster.stop()
    try:
        cli = run_csm("query", "sessions", "--team", env=team.alice.env)
        assert cli.returncode != 0 and cli.stderr.count("\n") == 1, cli.stderr
        for path in ("/sessions?scope=team", "/usage?scope=team&by=member", "/search?q=zebras&scope=team"):
            page.goto(team.site.base + path)
            down = page.locator(".team-down")
            expect(down).to_have_count(1)
            line = down.inner_text()
            assert "\n" not in line and line in cli.stderr, (line, cli.stderr)
        page.click("nav.scope >> text=Mine")
        expect(page.locator(".team-down")).to_have_count(0)
        expect(page.locator(".hits li.hit-row")).to_have_count(3)
        page.goto(team.site.base + "/sessions")
        expect(page.locator("#sessions tbody tr.item")).to_have_count(1)
    finally:
        cluster.start()

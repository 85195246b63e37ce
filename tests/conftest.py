"""Isolation for every test: a private HOME, XDG dirs, Claude config dir and runtime dir."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from csmtest import Csmd, isolated_env
from pgcluster import Cluster

if TYPE_CHECKING:
    from teamtest import Member


def pytest_report_header() -> str:
    return f"sqlite {sqlite3.sqlite_version}"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every path csm computes into ``tmp_path``; nothing reaches the real home."""
    env = isolated_env(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    made = len(Csmd.made)
    yield tmp_path
    # A test that failed half-way leaves its csmd running: kill it, or it outlives the whole run.
    for d in Csmd.made[made:]:
        if d.alive:
            d.kill()
    del Csmd.made[made:]
    shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    """The Claude Code projects/ folder csmd watches by default in tests."""
    p = tmp_path / "claude" / "projects"
    p.mkdir(parents=True)
    return p


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "csm" / "csm.db"


@pytest.fixture
def csmd(tmp_path: Path, projects: Path) -> Iterator[Csmd]:
    """A factory-started csmd on the isolated paths; stopped (and checked) at the end."""
    d = Csmd(tmp_path)
    yield d
    if d.alive:
        code = d.stop()
        assert code == 0, f"csmd exited {code} on SIGTERM:\n{d.log()}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster for the module (team mode's tests)."""
    c = Cluster()
    c.start()
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture
def teamdb(cluster: Cluster) -> str:
    from teamtest import new_teamdb

    return new_teamdb(cluster)


@pytest.fixture
def members() -> Iterator[list[Member]]:
    """The team members a test starts; each stopped (and checked) at the end."""
    made: list[Member] = []
    yield made
    for m in made:
        m.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, driven by Playwright, for the module's pages."""
    from webtest import ARGS, CHROMIUM

    playwright_sync = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()

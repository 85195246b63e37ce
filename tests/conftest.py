"""Isolation for every test: a private HOME, XDG dirs, Claude config dir and runtime dir."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from csmtest import Csmd, isolated_env


def pytest_report_header() -> str:
    return f"sqlite {sqlite3.sqlite_version}"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every path csm computes into ``tmp_path``; nothing reaches the real home."""
    env = isolated_env(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    yield tmp_path
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

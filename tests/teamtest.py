"""Shared by the team tests (test_team, test_web_team): a database with the team schema, and members —
each a real csmd with its own home, archive and ``[team]`` settings, talked to through the real CLI.
The fixtures (``cluster``, ``teamdb``, ``members``) are in conftest.py."""

from __future__ import annotations

import json
import os
import shutil
from itertools import count
from pathlib import Path
from typing import Any

import psycopg
import pytest

from csm.team import schema
from csmtest import REAL, Csmd, run_csm, wait_for
from pgcluster import ADMIN, Cluster, pg_bin

needs_postgres = pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL's server is not installed")
_dbs = count()


def db_name() -> str:
    """A database name not used yet in this test run's clusters."""
    return f"team{next(_dbs)}"


def new_teamdb(cluster: Cluster) -> str:
    """A fresh database with the team schema, and alice and bob as members (a role each)."""
    name = db_name()
    cluster.create_db(name)
    with psycopg.connect(cluster.dsn(dbname=name), autocommit=True) as conn:
        schema.migrate(conn)
        schema.add_member(conn, "alice")
        schema.add_member(conn, "bob")
    return name


class Member:
    """One person's machine: a csmd with its own home, transcripts, archive and ``[team]`` settings."""

    def __init__(self, tmp: Path, cluster: Cluster, db: str, name: str, machine: str, share: str = "transcripts",
                 extra: str = "") -> None:
        self.name, self.cluster, self.dbname = name, cluster, db
        self.home = tmp / name
        self.projects = self.home / "claude" / "projects"
        self.projects.mkdir(parents=True)
        run = Path(f"/tmp/csm-{name}-{os.getpid()}-{next(_dbs)}")
        run.mkdir(mode=0o700)
        self.run = run
        self.env = {**os.environ, "HOME": str(self.home), "XDG_DATA_HOME": str(self.home / "data"),
                    "XDG_CONFIG_HOME": str(self.home / "config"), "XDG_STATE_HOME": str(self.home / "state"),
                    "XDG_RUNTIME_DIR": str(run), "CLAUDE_CONFIG_DIR": str(self.home / "claude")}
        cfg = self.home / "config" / "csm" / "config.toml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(f'[team]\ndsn = "{cluster.dsn(user=name, dbname=db)}"\nmember = "{name}"\n'
                       f'machine = "{machine}"\nshare = "{share}"\n{extra}')
        self.db = self.home / "data" / "csm" / "csm.db"
        self.csmd = Csmd(self.home, env=self.env)

    def csm(self, *args: str) -> Any:
        r = run_csm(*args, "--json", env=self.env)
        assert r.returncode == 0, f"csm {' '.join(args)} failed ({r.returncode}): {r.stderr}"
        return json.loads(r.stdout)

    def start(self) -> None:
        """csmd started, and its first scan done (asked through this member's own socket)."""
        self.csmd.start(wait=False)

        def ready() -> bool:
            assert self.csmd.alive, self.csmd.log()
            r = run_csm("status", "--json", env=self.env)
            return r.returncode == 0 and json.loads(r.stdout).get("last_sync_at") is not None
        wait_for(ready, 30, f"{self.name}'s csmd to finish its first scan")

    def team_status(self) -> dict[str, Any]:
        return self.csm("team", "status")  # type: ignore[no-any-return]

    def caught_up(self, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            s = self.team_status()
            return s if s["connected"] and s["head"] > 0 and s["position"] == s["head"] else None
        return wait_for(done, timeout, f"{self.name}'s mirror to catch up")

    def stop(self) -> None:
        if self.csmd.alive:
            assert self.csmd.stop() == 0, self.csmd.log()
        shutil.rmtree(self.run, ignore_errors=True)


def pg(cluster: Cluster, db: str, query: str, *params: Any, user: str = ADMIN) -> list[tuple[Any, ...]]:
    with psycopg.connect(cluster.dsn(user=user, dbname=db), autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def copy_fixtures(dest: Path, *projects: str) -> None:
    for p in projects:
        shutil.copytree(REAL / p, dest / p)


def generate(path: Path, n: int, tag: str, start: int = 0) -> None:
    """``n`` user/assistant pairs, each response with its own id and tokens, appended to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for i in range(start, start + n):
            ts = f"2026-03-{1 + i % 28:02d}T{i % 24:02d}:00:00.000Z"
            f.write(json.dumps({"type": "user", "uuid": f"{tag}-u{i}", "sessionId": path.stem, "timestamp": ts,
                                "message": {"role": "user", "content": f"question {i} about zebras {tag}"}}) + "\n")
            f.write(json.dumps({
                "type": "assistant", "uuid": f"{tag}-a{i}", "sessionId": path.stem, "timestamp": ts,
                "requestId": f"req-{tag}-{i}",
                "message": {"id": f"msg-{tag}-{i}", "model": "claude-opus-4-6", "role": "assistant",
                            "content": [{"type": "text", "text": f"answer {i} on giraffes"}],
                            "usage": {"input_tokens": 10 + i, "output_tokens": 100 + i,
                                      "cache_creation_input_tokens": i % 7, "cache_read_input_tokens": 3 * i}}}) + "\n")

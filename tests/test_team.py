"""Team mode (issue 16): csmd mirrors into a real PostgreSQL; exactly once through crashes and outages; RLS.

One throwaway cluster per module (``pgcluster``: initdb and pg_ctl as ``nobody``, a unix socket in a
temp folder), one database per test. Each member is a real csmd with its own home, archive and
config.toml, talked to through the real CLI.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg")
import psycopg  # noqa: E402

from csmtest import Csmd, db_rows, run_csm, wait_for  # noqa: E402
from pgcluster import Cluster  # noqa: E402
from teamtest import Member, copy_fixtures, db_name, generate, needs_postgres, pg  # noqa: E402

pytestmark = needs_postgres


def local_totals(m: Member) -> dict[str, int]:
    rows = m.csm("query", "usage", "--by", "model", "--tz", "UTC")
    keys = ("responses", "input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
    return {k: sum(r[k] for r in rows) for k in keys}


def exactly_once(cluster: Cluster, db: str, m: Member) -> None:
    """Every local line, message and counted response is in PostgreSQL once, with the same content."""
    local_lines = sorted(r[0] for r in db_rows(m.db, "SELECT raw FROM events"))
    team_lines = sorted(r[0] for r in pg(cluster, db, "SELECT raw FROM csm.lines WHERE member = %s", m.name))
    assert team_lines == local_lines
    local_usage = sorted(db_rows(m.db, "SELECT key, input_tokens, output_tokens FROM usage_entries"))
    team_usage = sorted(pg(cluster, db, "SELECT key, input_tokens, output_tokens FROM csm.usage WHERE member = %s",
                           m.name))
    assert team_usage == local_usage
    local_msgs = db_rows(m.db, "SELECT count(*) FROM message_text")[0][0]
    assert pg(cluster, db, "SELECT count(*) FROM csm.messages WHERE member = %s", m.name)[0][0] == local_msgs > 0


def test_two_members_mirror_into_one_database_and_team_usage_is_their_sum(
        cluster: Cluster, teamdb: str, tmp_path: Path, members: list[Member]) -> None:
    alice = Member(tmp_path, cluster, teamdb, "alice", "alice-laptop")
    bob = Member(tmp_path, cluster, teamdb, "bob", "bob-desktop", share="sessions")
    members += [alice, bob]
    copy_fixtures(alice.projects, "-Users-dain-workspace-claude-code-log-sample", "-src-experiments-claude_p")
    copy_fixtures(bob.projects, "-experiments-ideas", "spotter")
    for m in members:
        m.start()
    for m in members:
        m.caught_up()

    want = {k: local_totals(alice)[k] + local_totals(bob)[k] for k in local_totals(alice)}
    assert want["responses"] > 0
    by_member = {r["member"]: r for r in alice.csm("query", "usage", "--team", "--by", "member")}
    assert set(by_member) == {"alice", "bob"}
    for k, v in want.items():
        assert sum(r[k] for r in by_member.values()) == v, k
    for m in members:
        assert {k: by_member[m.name][k] for k in want} == local_totals(m)
    machines = {r["machine"] for r in bob.csm("query", "usage", "--team", "--by", "machine")}
    assert machines == {"alice-laptop", "bob-desktop"}

    # Sessions of both, searchable lines of alice only (bob shares sessions, not transcripts).
    sessions = bob.csm("query", "sessions", "--team", "-n", "1000")
    assert {s["member"] for s in sessions} == {"alice", "bob"}
    local_sessions = sum(len(m.csm("query", "sql", "SELECT session_id FROM sessions")) for m in members)
    assert len(sessions) == local_sessions
    assert pg(cluster, teamdb, "SELECT count(*) FROM csm.lines WHERE member = 'bob'")[0][0] == 0
    exactly_once(cluster, teamdb, alice)

    # New lines are mirrored as they come, and full-text search finds them in PostgreSQL.
    generate(alice.projects / "-src-experiments-claude_p" / "new.jsonl", 5, "live")
    wait_for(lambda: alice.csm("query", "search", "--team", "zebras"), 30, "the new lines in the team's search")
    hits = alice.csm("query", "search", "--team", "zebras")
    assert {h["member"] for h in hits} == {"alice"} and len(hits) == 5
    alice.caught_up()
    exactly_once(cluster, teamdb, alice)
    daily = pg(cluster, teamdb, "SELECT sum(responses) FROM csm.usage_daily", user="bob")[0][0]
    assert daily == want["responses"] + 5


def test_postgres_stopped_mid_mirror_then_started_every_row_once(
        cluster: Cluster, teamdb: str, tmp_path: Path, members: list[Member]) -> None:
    alice = Member(tmp_path, cluster, teamdb, "alice", "a1", extra="batch_rows = 20\n")
    members.append(alice)
    generate(alice.projects / "p" / "s1.jsonl", 1500, "one")
    alice.start()
    wait_for(lambda: 0 < alice.team_status()["position"], 30, "the mirror to start sending")
    cluster.stop("immediate")  # a crash of the server, mid-mirror
    try:
        def down() -> dict[str, Any] | None:
            s = alice.team_status()
            return s if not s["connected"] and s["last_error"] else None
        s = wait_for(down, 30, "the mirror to notice PostgreSQL is gone")
        assert s["position"] < s["head"]
        # Local archiving goes on meanwhile.
        generate(alice.projects / "p" / "s2.jsonl", 50, "two")
        wait_for(lambda: alice.csm("query", "sql", "SELECT count(*) AS n FROM events")[0]["n"] == 3100, 30,
                 "local ingestion while PostgreSQL is down")
        assert alice.csm("status")["last_error"] is None
    finally:
        cluster.start()
    s = alice.caught_up(120)
    assert s["last_error"] is None
    exactly_once(cluster, teamdb, alice)


def test_csmd_killed_mid_mirror_every_row_once_after_restart(
        cluster: Cluster, teamdb: str, tmp_path: Path, members: list[Member]) -> None:
    alice = Member(tmp_path, cluster, teamdb, "alice", "a1", extra="batch_rows = 10\n")
    members.append(alice)
    generate(alice.projects / "p" / "s1.jsonl", 1500, "k")
    for _ in range(2):
        alice.start()
        wait_for(lambda: 0 < alice.team_status()["position"], 30, "the mirror to send something")
        s = alice.team_status()
        assert s["position"] < s["head"], "caught up before the kill: nothing was in flight"
        alice.csmd.stop(signal.SIGKILL)
    alice.start()
    alice.caught_up(120)
    exactly_once(cluster, teamdb, alice)


def test_mirroring_csmd_has_not_loaded_pythons_ssl(
        cluster: Cluster, teamdb: str, tmp_path: Path, members: list[Member]) -> None:
    """psycopg imports asyncio, which imports ``ssl``: the system's libssl and libcrypto, 4.2 MB of
    csmd's RSS that nothing uses (libpq does its own TLS). csmd mirrors with neither mapped
    (``team.driver``); only psycopg's own libraries are."""
    if psycopg.pq.__impl__ not in ("binary", "c"):
        pytest.skip("psycopg's ctypes implementation imports ssl itself")
    alice = Member(tmp_path, cluster, teamdb, "alice", "a1")
    members.append(alice)
    generate(alice.projects / "p" / "s.jsonl", 20, "tls")
    alice.start()
    alice.caught_up()
    exactly_once(cluster, teamdb, alice)
    assert alice.csmd.proc is not None
    libs = {row.split()[-1] for row in Path(f"/proc/{alice.csmd.proc.pid}/maps").read_text().splitlines()
            if "/" in row}
    assert any("libpq" in lib for lib in libs)
    assert [lib for lib in libs if "/_ssl." in lib] == []
    assert [lib for lib in libs if ("libcrypto" in lib or "libssl" in lib) and "psycopg" not in lib] == []


def rss_mb(m: Member) -> float:
    assert m.csmd.proc is not None
    for row in Path(f"/proc/{m.csmd.proc.pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_long_line_mirrored_then_its_memory_given_back(
        cluster: Cluster, teamdb: str, tmp_path: Path, members: list[Member]) -> None:
    """libpq keeps its output buffer as large as the largest message it ever sent on a connection: a
    10 MB prompt (its line and its prose) held ~26 MB in csmd for as long as the connection lasted.
    After a batch with a long value the mirror opens a new connection; csmd returns to its size."""
    alice = Member(tmp_path, cluster, teamdb, "alice", "a1")
    members.append(alice)
    f = alice.projects / "p" / "s.jsonl"
    generate(f, 5, "short")
    alice.start()
    alice.caught_up()
    base = rss_mb(alice)
    words = "zebras and giraffes " * ((10 << 20) // 20)
    with open(f, "a") as out:
        out.write(json.dumps({"type": "user", "uuid": "long", "sessionId": "s", "timestamp": "2026-03-01T00:00:00Z",
                              "message": {"role": "user", "content": words}}) + "\n")
    wait_for(lambda: pg(cluster, teamdb, "SELECT count(*) FROM csm.lines WHERE event_id = "
                                         "(SELECT max(event_id) FROM csm.lines) AND length(raw) > 10000000")[0][0],
             60, "the long line in PostgreSQL")
    alice.caught_up()
    assert alice.team_status()["last_error"] is None
    wait_for(lambda: rss_mb(alice) < base + 8, 30, f"csmd back near its {base:.1f} MB after mirroring the long line")
    exactly_once(cluster, teamdb, alice)


def test_a_member_cannot_write_another_members_rows(
        cluster: Cluster, teamdb: str, tmp_path: Path, members: list[Member]) -> None:
    bob = Member(tmp_path, cluster, teamdb, "bob", "b1", share="sessions")
    members.append(bob)
    copy_fixtures(bob.projects, "spotter")
    bob.start()
    bob.caught_up()
    row = ("alice", "x", "k1", "s", "p", "2026-01-01T00:00:00Z", "m", 1, 1, 1, 1, None, None, 0.1, None, None, None,
           False)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        pg(cluster, teamdb, "INSERT INTO csm.usage VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
           "%s, %s, %s, %s)", *row, user="bob")
    # bob cannot rewrite alice's rows either (they are not his to update), but reads the team's.
    pg(cluster, teamdb, "INSERT INTO csm.usage VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
       "%s, %s, %s, %s)", *row, user="alice")
    assert pg(cluster, teamdb, "UPDATE csm.usage SET output_tokens = 0 WHERE member = 'alice' RETURNING key",
              user="bob") == []
    assert pg(cluster, teamdb, "SELECT output_tokens FROM csm.usage WHERE member = 'alice'", user="bob") == [(1,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        pg(cluster, teamdb, "DELETE FROM csm.usage WHERE member = 'bob'", user="bob")
    # A csmd configured with someone else's member name is refused, says so, and keeps archiving.
    mallory = Member(tmp_path / "other", cluster, teamdb, "bob", "b2")
    members.append(mallory)
    cfg = mallory.home / "config" / "csm" / "config.toml"
    cfg.write_text(cfg.read_text().replace('member = "bob"', 'member = "alice"'))
    copy_fixtures(mallory.projects, "spotter")
    mallory.start()
    s = wait_for(lambda: (st := mallory.team_status())["last_error"] and st, 30, "the refusal")
    assert "row-level security" in s["last_error"] and s["position"] == 0
    assert pg(cluster, teamdb, "SELECT count(*) FROM csm.usage WHERE machine = 'b2'")[0][0] == 0


def test_share_usage_sends_no_transcript_text(
        cluster: Cluster, teamdb: str, tmp_path: Path, members: list[Member]) -> None:
    alice = Member(tmp_path, cluster, teamdb, "alice", "a1", share="usage")
    members.append(alice)
    generate(alice.projects / "secret-project" / "s.jsonl", 20, "hush")
    alice.start()
    alice.caught_up()
    assert pg(cluster, teamdb, "SELECT count(*) FROM csm.usage")[0][0] == 20
    for table in ("lines", "messages", "sessions"):
        assert pg(cluster, teamdb, f"SELECT count(*) FROM csm.{table}")[0][0] == 0
    dump = pg(cluster, teamdb, "SELECT string_agg(u::text, ' ') FROM csm.usage u")[0][0]
    assert "zebras" not in dump and "giraffes" not in dump and "question" not in dump


def test_project_patterns_and_resync(cluster: Cluster, teamdb: str, tmp_path: Path, members: list[Member]) -> None:
    alice = Member(tmp_path, cluster, teamdb, "alice", "a1", share="usage",
                   extra='include = ["work-*"]\nexclude = ["*-private"]\n')
    members.append(alice)
    for project in ("work-api", "work-private", "hobby"):
        generate(alice.projects / project / "s.jsonl", 3, project)
    alice.start()
    alice.caught_up()
    assert pg(cluster, teamdb, "SELECT DISTINCT project FROM csm.usage") == [("work-api",)]
    # Widening what is shared applies from then on; resync sends the history again, without doubling.
    alice.csmd.stop()
    cfg = alice.home / "config" / "csm" / "config.toml"
    cfg.write_text(cfg.read_text().replace('share = "usage"', 'share = "sessions"').replace('"work-*"', '"*"'))
    alice.start()
    alice.caught_up()
    assert pg(cluster, teamdb, "SELECT count(*) FROM csm.sessions")[0][0] == 0
    r = run_csm("team", "resync", env=alice.env)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: pg(cluster, teamdb, "SELECT count(*) FROM csm.sessions")[0][0] == 2, 30, "the resync")
    alice.caught_up()
    assert pg(cluster, teamdb, "SELECT project, count(*) FROM csm.usage GROUP BY 1 ORDER BY 1") == [
        ("hobby", 3), ("work-api", 3)]


def test_team_init_through_the_cli_and_errors_in_one_line(cluster: Cluster, tmp_path: Path) -> None:
    name = db_name()
    cluster.create_db(name)
    r = run_csm("team", "init", "--dsn", cluster.dsn(dbname=name), "--member", "carol")
    assert r.returncode == 0, r.stderr
    assert "t001_tables" in r.stdout and "carol" in r.stdout
    r = run_csm("team", "init", "--dsn", cluster.dsn(dbname=name))
    assert r.returncode == 0 and "up to date" in r.stdout
    assert pg(cluster, name, "SELECT member, role FROM csm.members") == [("carol", "carol")]
    # Reading the team store without [team], or from a database not set up: one line each, no traceback.
    r = run_csm("query", "usage", "--team")
    assert r.returncode == 69 and "[team]" in r.stderr and "Traceback" not in r.stderr
    cfg = tmp_path / "config" / "csm" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[team]\ndsn = "{cluster.dsn(dbname="postgres")}"\n')
    r = run_csm("query", "sessions", "--team")
    assert r.returncode == 69 and "csm team init" in r.stderr and "Traceback" not in r.stderr
    r = run_csm("query", "usage", "--by", "member")
    assert r.returncode != 0 and "--team" in r.stderr


def test_without_team_csmd_never_loads_psycopg(csmd: Csmd, tmp_path: Path) -> None:
    csmd.start()
    assert csmd.proc is not None
    maps = Path(f"/proc/{csmd.proc.pid}/maps").read_text()
    assert "psycopg" not in maps and "libpq" not in maps
    r = run_csm("team", "status")
    assert r.returncode == 0 and "team mode is off" in r.stdout


@pytest.mark.parametrize(("team", "error"), [
    ('dsn = "postgresql://alice:s3cret@db/csm"', "holds a password"),
    ('dsn = "host=db user=alice password = s3cret"', "holds a password"),
    ('share = "usage"', "needs 'dsn'"),
    ('dsn = "host=db"\nshare = "everything"', "bad value for 'team.share'"),
    ('dsn = "host=db"\nmembr = "x"', "membr"),
])
def test_team_settings_refused_with_their_line(tmp_path: Path, team: str, error: str) -> None:
    cfg = tmp_path / "config" / "csm" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'log_level = "info"\n[team]\n{team}\n')
    r = run_csm("config", "show")
    assert r.returncode == 78 and error in r.stderr and f"{cfg}:2" in r.stderr, r.stderr
    assert "s3cret" not in r.stderr


def test_team_member_and_machine_default_to_login_and_host(tmp_path: Path) -> None:
    import getpass
    import socket

    cfg = tmp_path / "config" / "csm" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[team]\nservice = "csm"\n')
    r = run_csm("config", "show", "--json")
    assert r.returncode == 0, r.stderr
    team = json.loads(r.stdout)["settings"]["team"]["value"]
    assert (team["member"], team["machine"], team["share"]) == (getpass.getuser(), socket.gethostname(), "usage")


def test_config_set_keeps_new_keys_out_of_the_team_table(tmp_path: Path) -> None:
    cfg = tmp_path / "config" / "csm" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[team]\ndsn = "host=db"\n')
    r = run_csm("config", "set", "rescan_interval_s", "7.5")
    assert r.returncode == 0, r.stderr
    settings = json.loads(run_csm("config", "show", "--json").stdout)["settings"]
    assert settings["rescan_interval_s"]["value"] == 7.5 and settings["team"]["value"]["dsn"] == "host=db"
    r = run_csm("config", "set", "team", "x")
    assert r.returncode == 78 and "edit it in the config file" in r.stderr

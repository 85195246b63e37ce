"""What ``csm`` imports to start: the short commands must not pay for the others (issue 4: start-up)."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

PROBE = """
import json, sys
from csm.client.cli import cli
from click.testing import CliRunner
CliRunner().invoke(cli, sys.argv[1:])
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("csm.", "zmq")))))
"""


def modules_after(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_status_imports_neither_the_daemon_nor_the_other_commands() -> None:
    mods = modules_after("status", "--help")
    assert "csm.client.cli" in mods
    assert not {m for m in mods if m.startswith("csm.daemon")}
    assert not mods & {"csm.client.browse", "csm.client.service", "csm.client.db", "csm.client.export"}
    assert not {m for m in mods if m.startswith("csm.web")}, "the web UI loads only for csm serve"
    assert "zmq" not in mods  # only once a request is sent


def test_lazy_commands_load_when_used() -> None:
    mods = modules_after("query", "search", "--help")
    assert "csm.client.browse" in mods
    assert "csm.client.service" not in mods


def test_help_lists_every_command() -> None:
    from csm.client.cli import cli

    top = CliRunner().invoke(cli, ["--help"]).output
    for name in ("config", "db", "export", "query", "serve", "service", "status", "sync", "watch"):
        assert f"  {name} " in top, name
    query = CliRunner().invoke(cli, ["query", "--help"]).output
    for name in ("errors", "search", "sessions", "show", "sql", "usage"):
        assert f"  {name} " in query, name


def test_a_query_command_typed_at_the_top_is_named_in_full() -> None:
    from csm.client.cli import cli

    for name in ("search", "sessions", "usage"):
        r = CliRunner().invoke(cli, [name, "x"])
        assert r.exit_code == 2 and f"No such command '{name}'; it is 'csm query {name}'." in r.output, r.output
    r = CliRunner().invoke(cli, ["serch"])
    assert r.exit_code == 2 and "No such command 'serch'." in r.output and "csm query" not in r.output

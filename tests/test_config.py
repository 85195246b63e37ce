"""config.toml: effective values and their sources, bad files refused, ``csm config show`` / ``path``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from csmtest import Csmd, csm_json, run_csm, wait_for
from test_watcher import append, configure, count, line

GOOD = """\
# csm settings
rescan_interval_s = 5

batch_lines = 500
roots = ["transcripts", "~/elsewhere/projects"]
"""


def test_show_asks_the_running_daemon_which_knows_its_flags(csmd: Csmd, tmp_path: Path) -> None:
    cfg = configure(tmp_path, "# csm settings\nrescan_interval_s = 5\n\nbatch_lines = 500\n")
    csmd.args = ["--log-level", "debug", "--no-watch"]
    csmd.start()
    out = csm_json("config", "show")
    assert (out["from"], out["pid"]) == ("csmd", csmd.proc.pid)
    assert (out["config_file"], out["config_file_exists"]) == (str(cfg), True)
    s = out["settings"]
    assert s["rescan_interval_s"] == {"value": 5.0, "source": "file", "where": f"{cfg}:2"}
    assert s["batch_lines"] == {"value": 500, "source": "file", "where": f"{cfg}:4"}
    assert s["log_level"] == {"value": "debug", "source": "command line", "where": "--log-level"}
    assert s["watch"] == {"value": False, "source": "command line", "where": "--no-watch"}
    assert s["roots"] == {"value": [str(tmp_path / "claude" / "projects")], "source": "environment",
                          "where": "CLAUDE_CONFIG_DIR"}
    assert s["db"] == {"value": str(tmp_path / "data" / "csm" / "csm.db"), "source": "default", "where": ""}
    assert s["poll_interval_s"]["source"] == "default"
    assert set(s) == {"roots", "db", "rescan_interval_s", "batch_lines", "batch_bytes", "max_line_bytes", "watch",
                      "poll_interval_s", "log_level", "query_time_limit_s", "query_max_rows", "query_max_bytes",
                      "query_queue", "search_defer_tools_bytes", "check_interval_s",
                      "final_line_after_s", "web_port", "team", "compress_after_days"}

    human = run_csm("config", "show")
    assert human.returncode == 0
    lines = human.stdout.splitlines()
    assert lines[0] == f"from the running csmd (pid {csmd.proc.pid})"
    assert lines[1] == f"config file: {cfg}"
    row = next(r for r in lines if r.startswith("batch_lines"))
    assert row.split() == ["batch_lines", "500", "file", f"({cfg}:4)"]
    assert run_csm("config", "path").stdout == f"{cfg}\n"


def test_without_a_daemon_the_file_is_read_here(tmp_path: Path) -> None:
    cfg = configure(tmp_path, GOOD)
    out = csm_json("config", "show")
    assert (out["from"], out["pid"]) == ("file", None)
    roots = out["settings"]["roots"]
    assert roots == {"value": [str(cfg.parent / "transcripts"), str(tmp_path / "home" / "elsewhere" / "projects")],
                     "source": "file", "where": f"{cfg}:5"}, "relative to the file's folder; ~ is the home"
    human = run_csm("config", "show")
    assert human.stdout.startswith("csmd is not running: read here from the config file")
    assert run_csm("config", "path").stdout == f"{cfg}\n"
    cfg.unlink()
    missing = run_csm("config", "show")
    assert missing.returncode == 0 and f"config file: {cfg} (not found)" in missing.stdout
    row = next(r for r in missing.stdout.splitlines() if r.startswith("rescan_interval_s"))
    assert row.split() == ["rescan_interval_s", "60.0", "default"]


def test_the_daemon_config_flag_wins_and_is_reported(csmd: Csmd, tmp_path: Path, projects: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('poll_interval_s = 0.5\nwatch = false\n')
    configure(tmp_path, "batch_lines = 7\n")  # the default file, which --config replaces
    csmd.args = ["--config", str(other)]
    csmd.start()
    out = csm_json("config", "show")
    assert (out["config_file"], out["config_file_source"]) == (str(other), "command line")
    assert out["settings"]["batch_lines"]["source"] == "default"
    assert out["settings"]["watch"] == {"value": False, "source": "file", "where": f"{other}:2"}
    assert run_csm("config", "path").stdout == f"{other}\n"
    append(projects / "p" / "s.jsonl", line(0))
    wait_for(lambda: count() == 1, timeout=5, what="a line found by the configured polling")


@pytest.mark.parametrize("body,where,words", [
    ("# ok\nrescan_interval_s = \"soon\"\n", 2, ["bad value for 'rescan_interval_s'", "Expected `float`"]),
    ("batch_lines = 100\nrescan_intervl = 5\n", 2, ["unknown setting 'rescan_intervl'", "rescan_interval_s"]),
    ("batch_lines = 0\n", 1, ["bad value for 'batch_lines'", ">= 1"]),
    ("\nlog_level = \"loud\"\n", 2, ["'log_level'", "one of: debug, info, warning, error"]),
    ("roots = \"/just/one\"\n", 1, ["'roots'", "Expected `array`"]),
    ("watch = yes\n", 1, ["TOML syntax error", "'watch'"]),
    ("[daemon]\nwatch = true\n", 1, ["unknown section 'daemon'"]),
])
def test_a_bad_file_names_key_and_line_and_csmd_does_not_start(tmp_path: Path, body: str, where: int,
                                                                 words: list[str]) -> None:
    cfg = configure(tmp_path, body)
    r = subprocess.run([sys.executable, "-m", "csm.daemon"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 78, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"csmd: error: {cfg}:{where}: ")
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    show = run_csm("config", "show")
    assert show.returncode == 78 and show.stderr == r.stderr.replace("csmd: error: ", "csm: ")


def test_a_config_file_named_on_the_command_line_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    r = subprocess.run([sys.executable, "-m", "csm.daemon", "--config", str(missing)], capture_output=True,
                       text=True, timeout=20)
    assert (r.returncode, r.stderr) == (78, f"csmd: error: config file not found: {missing}\n")
    show = run_csm("config", "show", "--file", str(missing))
    assert (show.returncode, show.stderr) == (78, f"csm: config file not found: {missing}\n")


def test_config_show_file_option_checks_a_file_even_with_a_daemon(csmd: Csmd, tmp_path: Path) -> None:
    csmd.start()
    new = tmp_path / "new.toml"
    new.write_text("batch_bytes = 65536\n")
    out = json.loads(run_csm("config", "show", "--file", str(new), "--json").stdout)
    assert out["from"] == "file" and out["settings"]["batch_bytes"]["value"] == 65536
    assert csm_json("config", "show")["settings"]["batch_bytes"]["source"] == "default"
    new.write_text("batch_bytes = -1\n")
    checked = run_csm("config", "show", "--file", str(new), "--json")
    assert checked.returncode == 78 and checked.stdout == ""
    assert checked.stderr == f"csm: {new}:1: bad value for 'batch_bytes': Expected `int` >= 1\n"


def test_config_set_writes_the_file_checked_and_csmd_applies_it_without_a_restart(csmd: Csmd,
                                                                                  tmp_path: Path) -> None:
    cfg = configure(tmp_path, "# mine\nrescan_interval_s = 60  # a comment\nbatch_lines = 500\n")
    csmd.start()
    pid = csmd.proc.pid
    r = run_csm("config", "set", "rescan_interval_s", "7.5")
    assert r.returncode == 0, r.stderr
    assert "csmd: applied: rescan_interval_s" in r.stdout
    assert cfg.read_text() == "# mine\nrescan_interval_s = 7.5\nbatch_lines = 500\n"
    out = csm_json("config", "show")
    assert out["pid"] == pid, "applied by the same csmd, not a restart"
    assert out["settings"]["rescan_interval_s"] == {"value": 7.5, "source": "file", "where": f"{cfg}:2"}

    bad = run_csm("config", "set", "rescan_interval_s", "soon")
    assert bad.returncode == 78 and bad.stderr.count("\n") == 1, bad.stderr
    assert f"{cfg}:2: bad value for 'rescan_interval_s'" in bad.stderr
    assert cfg.read_text() == "# mine\nrescan_interval_s = 7.5\nbatch_lines = 500\n", "nothing half-written"
    unknown = run_csm("config", "set", "rescan", "5")
    assert unknown.returncode == 78 and "unknown setting 'rescan'" in unknown.stderr

    later = run_csm("config", "set", "batch_lines", "100")
    assert "after a restart of csmd: batch_lines" in later.stdout


def test_readme_says_every_literal_default_the_code_has() -> None:
    """README's table of settings states each default; a number or word there must be the code's."""
    import re

    from csm.shared.config import Config

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", readme, re.M))
    defaults = Config()
    literal = {k: getattr(defaults, k) for k in Config.__struct_fields__
               if isinstance(getattr(defaults, k), (int, float, bool)) or k == "log_level"}
    assert literal, "no defaults found"
    for key, value in literal.items():
        assert key in table, f"README's settings table has no row for {key}"
        shown = json.loads(table[key])
        assert shown == value, f"README says {key} = {table[key]}, the code {value!r}"

"""ccusage, the reference csm's token totals are checked against, run on a fixture folder.

Run as a script to rebuild the golden files in ``tests/fixtures/usage/`` (their README has
the command); the tests use ``run`` for the live cross-check when ccusage is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "usage"
VERSION = "20.0.24"
ARGS = ["claude", "daily", "--json", "--offline", "-z", "UTC"]
SETS: dict[str, tuple[Path, tuple[str, ...]]] = {
    # name: (a projects/ folder, top entries left out)
    "real": (FIXTURES / "real", ("handmade", "SOURCES.md")),
    "usage": (GOLDEN / "projects", ()),
    "handmade": (FIXTURES / "real", tuple(p.name for p in (FIXTURES / "real").iterdir() if p.name != "handmade")),
    "third-party": (GOLDEN / "third-party", ()),
}


def find() -> str | None:
    """ccusage's path: ``$CSM_CCUSAGE``, else ``ccusage`` on PATH."""
    return os.environ.get("CSM_CCUSAGE") or shutil.which("ccusage")


def layout(name: str, dest: Path) -> Path:
    """Copy fixture set ``name`` into ``dest/.claude/projects``; returns ``dest/.claude``."""
    src, skip = SETS[name]
    projects = dest / ".claude" / "projects"
    shutil.copytree(src, projects, ignore=lambda d, names: [n for n in names if d == str(src) and n in skip])
    return projects.parent


def run(binary: str, name: str) -> dict[str, Any]:
    """ccusage's daily report (UTC) for fixture set ``name``, in a throw-away home."""
    with tempfile.TemporaryDirectory(prefix="csm-ccusage-") as tmp:
        return run_in(binary, layout(name, Path(tmp)))


def run_in(binary: str, config: Path) -> dict[str, Any]:
    """ccusage's daily report (UTC) for the Claude config dir ``config`` (its ``projects/``)."""
    home = config.parent
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(config),
           "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"), "NO_COLOR": "1"}
    out = subprocess.run([binary, *ARGS], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"ccusage-{name}.json").read_text())


if __name__ == "__main__":
    binary = sys.argv[1] if len(sys.argv) > 1 else find()
    if not binary:
        sys.exit("usage: python tests/ccusage.py PATH-TO-ccusage (or set CSM_CCUSAGE)")
    for set_name in SETS:
        (GOLDEN / f"ccusage-{set_name}.json").write_text(json.dumps(run(binary, set_name), indent=2) + "\n")
        print(f"wrote {GOLDEN / f'ccusage-{set_name}.json'}")

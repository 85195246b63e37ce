"""The built package, not the source tree: sdist and wheel carry the unit templates, and the wheel
installed into a fresh venv runs csmd, csm sync, csm query and csm service install --dry-run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / "packaging" / "check_wheel.py"


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_whole_flow(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(CHECK), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    steps = [ln for ln in r.stdout.splitlines() if ln.startswith("ok  ")]
    assert len(steps) == 6, r.stdout
    assert "systemd/csm.service" in steps[0] and str(tmp_path / "out" / "venv" / "bin" / "csmd") in steps[2]
    assert "claude_code_session_manager-" in steps[0], "the distribution's own name: 'csm' on PyPI is another project"
    assert "claude-code-session-manager: commands csm, csmd" in steps[1]

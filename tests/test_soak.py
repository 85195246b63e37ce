"""A short soak (bench/soak.py for 8 s): many live files and busy clients, every line exactly once.

The full run (60 s, with the freshness and memory targets) is ``python bench/soak.py``;
here only what must hold on any machine is asserted, since CI timing varies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


def test_short_soak_every_line_once_and_every_client_answered() -> None:
    r = subprocess.run([sys.executable, str(SOAK), "--files", "50", "--rate", "2000", "--seconds", "8", "--json"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.stdout.strip(), r.stderr
    figures = json.loads(r.stdout)
    assert figures["written"] > 8 * 2000 * 0.8, figures  # the writer kept (nearly) its pace
    assert figures["rows"] == figures["distinct"] == figures["written"], figures
    assert figures["bad_lines"] == 0
    assert figures["client_calls"] > 50 and figures["client_failures"] == 0, figures["failures"][:3]
    assert not any("csmd exited" in f for f in figures["failures"])

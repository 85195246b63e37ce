"""Build csm's sdist and wheel, install the wheel into a fresh venv, and run csm from there.

What a user gets from ``pipx install`` / ``uv tool install`` is that wheel in its own
venv, so this is the check that the package (not the source tree) works: the unit
templates are inside it, the ``csmd`` and ``csm`` console scripts run, and the service
unit points at the venv's own ``csmd``. Everything runs under a private HOME and XDG
dirs inside ``--out``; nothing touches the real home directory.

    python packaging/check_wheel.py [--out DIR]      # needs 'build' (pip install build)

Exits 0 and prints one line a step, or exits 1 naming the step that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = "claude-code-session-manager"
"""The name on the package index: "csm" there is an unrelated project; the commands stay csm and csmd."""
TEMPLATES = ["systemd/csm.service", "launchd/dev.csm.csmd.plist"]


class Failed(Exception):
    pass


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def step(what: str, started: float) -> None:
    print(f"ok  {what} ({time.monotonic() - started:.1f} s)", flush=True)


def build(dist: Path) -> tuple[Path, Path]:
    t = time.monotonic()
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)])
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    stem = DISTRIBUTION.replace("-", "_")
    if not (wheel.name.startswith(f"{stem}-") and sdist.name.startswith(f"{stem}-")):
        raise Failed(f"the distributions are not named {DISTRIBUTION}: {wheel.name}, {sdist.name}")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = [t for t in TEMPLATES if f"csm/{t}" not in in_wheel]
    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing += [f"sdist:{t}" for t in TEMPLATES if t not in in_sdist]
    if missing:
        raise Failed(f"templates missing from the distributions: {', '.join(missing)}")
    step(f"built {sdist.name} and {wheel.name}, both carrying {', '.join(TEMPLATES)}", t)
    return sdist, wheel


def install(wheel: Path, venv: Path) -> Path:
    t = time.monotonic()
    # Without its own pip (seconds saved): this pip installs into it, as pipx and uv do with theirs.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--find-links", str(wheel.parent), str(wheel)])
    name = run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; "
                f"d = m.distribution('{DISTRIBUTION}'); print(d.metadata['Name'], *sorted(e.name for e in d.entry_points))"
                ]).stdout.split()
    if name != [DISTRIBUTION, "csm", "csmd"]:
        raise Failed(f"the installed distribution is {name}, not {DISTRIBUTION} with the commands csm and csmd")
    step(f"installed the wheel ({DISTRIBUTION}: commands csm, csmd) into a fresh venv {venv}", t)
    return venv / "bin"


def private_env(out: Path, run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CLAUDE_", "NOTIFY_", "WATCHDOG_"))}
    env.update(HOME=str(out / "home"), XDG_DATA_HOME=str(out / "data"), XDG_CONFIG_HOME=str(out / "config"),
               XDG_STATE_HOME=str(out / "state"), XDG_RUNTIME_DIR=str(run_dir), CLAUDE_CONFIG_DIR=str(out / "claude"))
    (out / "home").mkdir(exist_ok=True)
    return env


def flow(bin_: Path, out: Path, env: dict[str, str]) -> None:
    t = time.monotonic()
    transcript = out / "claude" / "projects" / "-home-me-proj" / "s1.jsonl"
    transcript.parent.mkdir(parents=True)
    lines = [{"type": "user", "uuid": f"u{i}", "sessionId": "s1", "timestamp": "2026-11-01T10:00:00.000Z",
              "message": {"role": "user", "content": f"hello {i}"}} for i in range(3)]
    transcript.write_text("".join(json.dumps(x) + "\n" for x in lines))

    def csm(*args: str) -> str:
        return run([str(bin_ / "csm"), *args], env=env, timeout=60).stdout

    with open(out / "csmd.log", "wb") as log:
        daemon = subprocess.Popen([str(bin_ / "csmd")], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(bin_ / "csm"), "status"], env=env, capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"csmd did not come up:\n{(out / 'csmd.log').read_text()}")
            time.sleep(0.1)
        step(f"{bin_ / 'csmd'} is up", t)
        synced = json.loads(csm("sync", "--now", "--json"))
        if synced["files_scanned"] != 1:
            raise Failed(f"csm sync --now scanned {synced['files_scanned']} files, not 1")
        rows = json.loads(csm("query", "sql", "--json", "SELECT uuid FROM lines ORDER BY line_offset"))
        if [r["uuid"] for r in rows] != ["u0", "u1", "u2"]:
            raise Failed(f"csm query sql returned {rows}")
        step("csm sync --now and csm query sql see the transcript's 3 lines", t)
        figures = csm("status", "--format", "prometheus")
        completion = run([str(bin_ / "csm")], env={**env, "_CSM_COMPLETE": "bash_source"}).stdout
        ids = run([str(bin_ / "csm")], env={**env, "_CSM_COMPLETE": "bash_complete", "COMP_WORDS": "csm query show s",
                                            "COMP_CWORD": "3"}).stdout.split()
        if "\ncsm_up 1\n" not in figures or "complete -o nosort -F" not in completion or ids != ["plain,s1"]:
            raise Failed(f"status for Prometheus or shell completion failed:\n{figures}\n{completion}\n{ids}")
        step("csm status --format prometheus, and bash completion of session ids from csmd", t)
        unit = csm("service", "install", "--dry-run")
        if f"\nExecStart={bin_ / 'csmd'}\n" not in unit:
            raise Failed(f"the unit does not start the venv's csmd:\n{unit}")
        step("csm service install --dry-run renders a unit that starts the venv's csmd", t)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
    if code != 0:
        raise Failed(f"csmd exited {code} on SIGTERM:\n{(out / 'csmd.log').read_text()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="csm-wheel-"))
    run_dir = Path(tempfile.mkdtemp(prefix="csm-", dir="/tmp"))  # short: unix socket paths are limited
    try:
        _, wheel = build(out / "dist")
        bin_ = install(wheel, out / "venv")
        flow(bin_, out, private_env(out, run_dir))
    except (Failed, subprocess.TimeoutExpired) as e:
        print(f"FAILED {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

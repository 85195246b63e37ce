"""Where csm keeps its state and where Claude Code keeps transcripts.

Every path csm uses is computed here and nowhere else, so that tests (and users)
can move all of it with the standard environment variables: ``HOME``,
``XDG_DATA_HOME``, ``XDG_CONFIG_HOME``, ``XDG_STATE_HOME``, ``XDG_RUNTIME_DIR`` and
``CLAUDE_CONFIG_DIR``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

from csm.shared.errors import PathError

APP = "csm"
DB_NAME = "csm.db"
SOCKET_NAME = "csmd.sock"
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS) including the NUL;
# ZeroMQ refuses longer ipc:// endpoints.
MAX_IPC_PATH = 103
SYSTEMD_UNIT = "csm.service"
LAUNCHD_LABEL = "dev.csm.csmd"
# ``csm serve`` as a login service of its own (``csm service install --web``).
SYSTEMD_WEB_UNIT = "csm-web.service"
LAUNCHD_WEB_LABEL = "dev.csm.serve"
SERVE_URL_NAME = "serve.url"
# The variables that move csm's paths (see the module docstring), HOME aside.
PATH_VARIABLES = ("CLAUDE_CONFIG_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def db_path() -> Path:
    return data_dir() / DB_NAME


def lock_path(db: Path) -> Path:
    """The single-instance lock lives beside the database it protects."""
    return db.with_name(db.name + ".lock")


def db_files(db: Path) -> list[tuple[Path, str]]:
    """The database and the files SQLite keeps beside it in WAL mode, with what to call each in a message."""
    return [(db, "database"), (db.with_name(db.name + "-wal"), "database WAL"),
            (db.with_name(db.name + "-shm"), "database shared-memory file")]


def archive_path(db: Path, name: str) -> Path:
    """The archive file ``name`` (a year) of the database ``db``: beside it, ``csm-archive-2025.db`` (``csm archive``)."""
    return db.with_name(f"{db.stem}-archive-{name}{db.suffix}")


def own_files(db: Path) -> list[Path]:
    """Files csmd itself writes, which it must never read as transcripts, wherever they sit.

    The database and its companions, the lock, and the files its stdout/stderr go to when a
    service manager points them at a file (found through ``/proc/self/fd`` where there is one).
    """
    own = [*(p for p, _ in db_files(db)), db.with_name(db.name + "-journal"), lock_path(db)]
    for fd in (1, 2):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("/") and Path(target).is_file():
                own.append(Path(target))
        except OSError:  # e.g. a log in a folder csmd may not look into: it cannot read it as a transcript either
            continue
    return own


def config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP, appauthor=False)) / "config.toml"


def warnings_seen_path() -> Path:
    """The warnings ``csm status`` gave once already (one a line), so it does not repeat them."""
    return Path(platformdirs.user_state_dir(APP, appauthor=False)) / "warnings-seen"


def runtime_dir() -> Path:
    """The private folder that holds the control socket.

    ``$XDG_RUNTIME_DIR`` is per-user, tmpfs and 0700 on systemd machines; without it
    (macOS, containers) the user state dir is the next private place.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / APP
    return Path(platformdirs.user_state_dir(APP, appauthor=False))


def socket_path() -> Path:
    path = runtime_dir() / SOCKET_NAME
    if len(os.fsencode(path)) > MAX_IPC_PATH:
        raise PathError(
            f"control socket path is {len(os.fsencode(path))} bytes, over the {MAX_IPC_PATH}-byte "
            f"limit of unix sockets: {path}; set XDG_RUNTIME_DIR to a shorter folder"
        )
    return path


def endpoint(sock: Path | None = None) -> str:
    return "ipc://" + str(sock or socket_path())


def claude_roots() -> list[Path]:
    """The ``projects/`` folders Claude Code writes transcripts into.

    ``$CLAUDE_CONFIG_DIR`` replaces the defaults when set; it may be a comma-separated
    list whose entries are either a Claude config dir or a ``projects/`` dir itself
    (ccusage reads it the same way). Otherwise both historical defaults are used,
    whichever exist; when neither does, ``~/.claude/projects`` is returned so that the
    daemon picks it up once Claude Code creates it.
    """
    env = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if env:
        roots: list[Path] = []
        for entry in env.split(","):
            entry = entry.strip()
            if not entry:
                continue
            p = Path(entry).expanduser()
            root = p if p.name == "projects" else p / "projects"
            if root not in roots:
                roots.append(root)
        return roots
    home = Path.home()
    defaults = [home / ".claude" / "projects", home / ".config" / "claude" / "projects"]
    existing = [p for p in defaults if p.is_dir()]
    return existing or defaults[:1]


def claude_config_dirs(roots: list[Path]) -> list[Path]:
    """The Claude config dirs behind transcript roots (a ``projects/`` root's parent): where Claude Code
    keeps ``settings.json`` and ``history.jsonl``. A root not named ``projects`` has none csm knows."""
    dirs: list[Path] = []
    for root in roots:
        if root.name == "projects" and root.parent not in dirs:
            dirs.append(root.parent)
    return dirs


TRANSCRIPT_SUFFIX = ".jsonl"


def is_transcript_name(path: str) -> bool:
    """Whether a file's name is a transcript's (``x.jsonl``; not ``x.jsonl.bak``, not ``x.json``)."""
    return path.endswith(TRANSCRIPT_SUFFIX)


def serve_url_path() -> Path:
    """Where a running ``csm serve`` keeps its URL (with this run's token, so 0600, in the private
    runtime folder): how ``csm serve --url`` reaches the page a login service started."""
    return runtime_dir() / SERVE_URL_NAME


def csmd_command() -> list[str]:
    """How a service manager starts the csmd of the Python environment this csm runs in.

    Console scripts sit beside the interpreter (``bin/``) in venv, pipx and uv tool
    installs alike. ``sys.executable`` is not resolved: in a venv it is a symlink whose
    location is what makes it that venv. Without a ``csmd`` script (running from a
    source tree), the module is the entry point.
    """
    return _script("csmd", "csm.daemon")


def csm_command() -> list[str]:
    """How a service manager starts this csm (``csm serve``), found as ``csmd_command`` finds csmd."""
    return _script("csm", "csm.client")


def _script(name: str, module: str) -> list[str]:
    python = Path(sys.executable).absolute()
    script = python.parent / name
    if os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", module]


def systemd_unit_path(unit: str = SYSTEMD_UNIT) -> Path:
    """Where systemd's user manager looks for a user's own units."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    config = Path(base) if os.path.isabs(base) else Path.home() / ".config"  # systemd ignores a relative one
    return config / "systemd" / "user" / unit


def launchd_plist_path(label: str = LAUNCHD_LABEL) -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{label}.plist"


def launchd_log_path(program: str = "csmd") -> Path:
    """launchd captures a service's stderr here (systemd sends it to the journal)."""
    return Path.home() / "Library" / "Logs" / APP / f"{program}.log"

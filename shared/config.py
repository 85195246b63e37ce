"""csm settings: defaults, overridden by ``config.toml``, overridden by command-line flags.

The file is optional. A bad file is an error (csmd refuses to start on it) rather than
being half-applied, because a daemon that silently ignores a setting is worse than one
that says which line is wrong.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from csm.shared.errors import ConfigError


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Effective settings. ``forbid_unknown_fields`` so a typo is reported, not ignored."""

    roots: list[str] = []
    """Transcript roots (``projects/`` folders); empty means the Claude Code defaults."""
    db: str = ""
    """Database path; empty means the platform data dir."""
    rescan_interval_s: float = 60.0
    """Reconciliation rescan period: the safety net under the file watcher."""
    batch_lines: int = 2000
    """Lines per transaction (each batch commits with its checkpoint)."""
    batch_bytes: int = 4 * 1024 * 1024
    """Bytes per transaction, whichever limit comes first."""
    max_line_bytes: int = 256 * 1024 * 1024
    """A longer line is recorded as a bad line and skipped, never held in memory (real lines reach ~10 MB)."""
    watch: bool = True
    """Use the file watcher; false means polling rescans only."""
    poll_interval_s: float = 2.0
    """Rescan period when the watcher is off or cannot watch (inotify limits)."""
    log_level: str = "info"


def load(path: Path) -> Config:
    """Read ``path`` if it exists; defaults otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{path}: {_with_line(str(e), text)}") from None


def _with_line(message: str, text: str) -> str:
    """Add the line of the offending key, which msgspec names as ``$.key``."""
    if "`$." not in message:
        return message
    key = message.split("`$.", 1)[1].split("`", 1)[0].split(".")[0].split("[")[0]
    for number, line in enumerate(text.splitlines(), 1):
        if line.split("=", 1)[0].strip() == key:
            return f"line {number}: {message}"
    return message

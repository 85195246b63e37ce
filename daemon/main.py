"""``csmd``: the csm daemon, run in the foreground (service managers run it so)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from csm.daemon import heap
from csm.shared import __version__, paths
from csm.shared import config as config_mod
from csm.shared.errors import CsmError
from csm.shared.streams import whole_writes


class JournalFormatter(logging.Formatter):
    """For stderr read by journald: it stamps the time itself, and a ``<N>`` prefix sets the
    line's syslog priority, so ``journalctl --user -u csm -p warning`` finds the problems."""

    PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITIES.get(record.levelno, 6)}>{record.name}: {super().format(record)}"


def _stderr_is_journal() -> bool:
    """systemd sets ``JOURNAL_STREAM`` to the device and inode of the stream it connected."""
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Transcript root (a Claude Code projects/ folder). Repeatable. Default: $CLAUDE_CONFIG_DIR, "
                   "else ~/.claude/projects and ~/.config/claude/projects.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Database file.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file (default: the user config dir's csm/config.toml; 'csm config path').")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity.")
@click.option("--no-watch", is_flag=True, help="Do not use the file watcher; poll with rescans instead.")
@click.version_option(__version__, prog_name="csmd")
def cli(roots: tuple[Path, ...], db: Path | None, config_file: Path | None, log_level: str | None,
        no_watch: bool) -> None:
    """Keep a SQLite archive of Claude Code transcripts in step with the files.

    Runs in the foreground and logs to stderr. Stop it with Ctrl-C or SIGTERM: the
    batch in hand is committed first.

    \b
    Examples:
      csmd                                  # default paths
      csmd --root ~/work/claude/projects --db ~/archive/csm.db
      csmd --config ./csm.toml --log-level debug

    Settings: defaults, then config.toml, then these flags ('csm config show').
    A config file with a bad key or value stops csmd with exit status 78.
    """
    from csm.daemon.app import Daemon

    os.umask(0o077)  # whatever csmd creates (database, WAL, lock, socket) is the user's alone
    overrides: dict[str, tuple[object, str]] = {}
    if roots:
        overrides["roots"] = ([str(p.expanduser().absolute()) for p in roots], "--root")
    if db:
        overrides["db"] = (str(db.expanduser().absolute()), "--db")
    if log_level:
        overrides["log_level"] = (log_level, "--log-level")
    if no_watch:
        overrides["watch"] = (False, "--no-watch")
    settings = config_mod.resolve(config_file, overrides)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if _stderr_is_journal() else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, settings.config.log_level.upper()), handlers=[handler])
    # watchdog logs every inotify event at debug level: with the log file inside a root,
    # each line logged would be an event logging another line, forever. Its warnings
    # (a queue overflow) always pass: the watcher acts on them.
    logging.getLogger("watchdog").setLevel(min(max(logging.INFO, logging.getLogger().level), logging.WARNING))
    if settings.file_exists:
        logging.getLogger("csm.daemon").info("settings from %s", settings.file)
    daemon = Daemon(settings, paths.socket_path())
    sys.exit(daemon.run())


def main() -> None:
    whole_writes()
    heap.configure()
    try:
        cli(standalone_mode=True)
    except CsmError as e:
        click.echo(f"csmd: error: {e}", err=True)
        sys.exit(e.exit_code)

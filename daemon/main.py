"""``csmd``: the csm daemon, run in the foreground (service managers run it so)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from csm.shared import __version__, paths
from csm.shared import config as config_mod
from csm.shared.errors import CsmError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Transcript root (a Claude Code projects/ folder). Repeatable. Default: $CLAUDE_CONFIG_DIR, "
                   "else ~/.claude/projects and ~/.config/claude/projects.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Database file.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file (default: the user config dir's csm/config.toml).")
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
      csmd --root ~/work/claude/projects --db /tmp/csm.db
    """
    from csm.daemon.app import Daemon

    os.umask(0o077)  # whatever csmd creates (database, WAL, lock, socket) is the user's alone
    cfg = config_mod.load(config_file or paths.config_path())
    level = (log_level or cfg.log_level).upper()
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root_list = [p.expanduser().absolute() for p in roots] or [Path(r).expanduser() for r in cfg.roots] \
        or paths.claude_roots()
    db_path = db.absolute() if db else config_mod.db_file(cfg)
    if no_watch:
        cfg.watch = False
    daemon = Daemon(cfg, db_path, [r.absolute() for r in root_list], paths.socket_path())
    sys.exit(daemon.run())


def main() -> None:
    try:
        cli(standalone_mode=True)
    except CsmError as e:
        click.echo(f"csmd: error: {e}", err=True)
        sys.exit(e.exit_code)

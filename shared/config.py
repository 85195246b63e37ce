"""csm settings: defaults, overridden by ``config.toml``, overridden by csmd's command line.

The file is optional. A bad file is an error (csmd refuses to start on it) rather than
being half-applied, because a daemon that silently ignores a setting is worse than one
that says which line is wrong. Every effective value remembers where it came from, so
``csm config show`` can answer "why is it this?" without guessing.

Precedence, lowest first: the default; ``$CLAUDE_CONFIG_DIR`` (roots only: it is where
Claude Code itself writes); the config file; csmd's command-line flags. Relative paths
in the file are relative to the file's folder, so a service started from ``/`` reads
the same file the same way.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import tomllib
from pathlib import Path
from urllib.parse import urlsplit
from typing import Annotated, Any, Literal, get_args, get_type_hints

import msgspec

from csm.shared import paths
from csm.shared.errors import ConfigError
from csm.shared.protocol import Setting

LogLevel = Literal["debug", "info", "warning", "error"]
Share = Literal["usage", "sessions", "transcripts"]


class Team(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[team]``: what csmd mirrors into the team's PostgreSQL, and as whom (issue 16, README "Team").

    The password is never here: libpq finds it in its own password file (``~/.pgpass``,
    ``PGPASSFILE``) or service file (``~/.pg_service.conf``), which are the user's alone,
    so config.toml can be shown and shared without leaking it.
    """

    dsn: str = ""
    """A libpq connection string or URL (``postgresql://alice@db.example/csm``), without a password."""
    service: str = ""
    """A libpq service name (``~/.pg_service.conf``), instead of or besides ``dsn``."""
    share: Share = "usage"
    """usage (responses, tokens, cost), sessions (adds titles, projects, times, models), transcripts (adds the lines)."""
    include: list[str] = msgspec.field(default_factory=lambda: ["*"])
    """Projects shared: glob patterns on the project folder name, ignoring case."""
    exclude: list[str] = []
    """Projects never shared, whatever ``include`` says."""
    member: str = ""
    """Who the rows belong to; empty means the login name."""
    machine: str = ""
    """Which machine they come from; empty means the host name."""
    batch_rows: Annotated[int, msgspec.Meta(ge=1)] = 2000
    """Local rows (events) per PostgreSQL transaction."""

    def conninfo(self) -> str:
        """The libpq conninfo: the DSN, with the service added when both are given."""
        parts = [self.dsn] if self.dsn else []
        if self.service:
            parts.append(f"service={self.service}")
        return " ".join(parts)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Effective settings. README's table of keys says the same as these docstrings: keep them in step."""

    roots: list[str] = []
    """Transcript roots (Claude Code ``projects/`` folders); empty means ``$CLAUDE_CONFIG_DIR`` or the defaults."""
    db: str = ""
    """Database file; empty means the user data dir's ``csm/csm.db``."""
    rescan_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """Reconciliation rescan period (s): the safety net under the file watcher."""
    batch_lines: Annotated[int, msgspec.Meta(ge=1)] = 2000
    """Lines per transaction (each batch commits with its checkpoint)."""
    batch_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1024 * 1024
    """Bytes per transaction, whichever limit comes first. A batch is held in memory about
    three times over (bytes, lines, decoded text), so this bounds csmd's peak RSS."""
    max_line_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024 * 1024
    """A longer line is recorded as a bad line instead of being read into memory and stored."""
    check_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    """Period (s) of the database's ``quick_check``, run at start too, in the background at idle priority."""
    final_line_after_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """A last line without its newline that is a complete JSON object is stored by the first rescan after
    csmd has seen the file unchanged for this long (a writer never pauses that long inside a line)."""
    watch: bool = True
    """Use the file watcher; false means polling rescans only."""
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    """Rescan period (s) when not watching (watch = false, or inotify limits reached)."""
    log_level: LogLevel = "info"
    """Log verbosity: debug, info, warning or error."""
    query_time_limit_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Wall time after which ``csm query sql`` stops a query (keep it below the CLI's 30 s wait)."""
    query_max_rows: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    """Most rows one query may return, whatever the client asks for."""
    query_max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024 * 1024
    """About the most bytes of values one query may return (bounds csmd's memory per reply)."""
    query_queue: Annotated[int, msgspec.Meta(ge=1)] = 32
    """Queries running or waiting at once; more are answered "busy" at once."""
    search_defer_tools_bytes: Annotated[int, msgspec.Meta(ge=0)] = 16 * 1024 * 1024
    """A rescan with at least this many bytes to read (an initial sync) indexes its lines for search just
    after its rows, in bulk, rather than line by line (the name is older: the prose is deferred too)."""
    compress_after_days: Annotated[float, msgspec.Meta(ge=0)] = 3.0
    """A transcript file unchanged for this many days has its lines stored compressed (in the background, when
    csmd is idle); a file that changes again gets its new lines uncompressed. 0: every file, at once."""
    web_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8765
    """The TCP port ``csm serve`` listens on without ``--port`` (on 127.0.0.1): a stable address for its login
    service (``csm service install --web``); read by ``csm serve`` when it starts."""
    team: Team | None = None
    """``[team]``: mirror into the team's PostgreSQL; absent means no team mode."""


KEYS: tuple[str, ...] = Config.__struct_fields__


class Resolved(msgspec.Struct, kw_only=True):
    """The settings csmd runs with: final values (roots and db resolved) and where each came from."""

    config: Config
    file: str
    file_exists: bool
    file_source: str
    """"default" or "command line" (``csmd --config``)."""
    sources: dict[str, Setting]

    def roots(self) -> list[Path]:
        return [Path(r) for r in self.config.roots]

    def db(self) -> Path:
        return Path(self.config.db)


def _read(path: Path) -> tuple[Config, dict[str, int], bool]:
    """The file's settings, the line each key is on, and whether the file exists."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(), {}, False
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_syntax_error(path, text, str(e))) from None
    lines = _key_lines(text)
    for key, value in data.items():
        if key not in KEYS:
            kind = "section" if isinstance(value, dict) else "setting"
            raise ConfigError(f"{_where(path, lines, key)}: unknown {kind} '{key}' (known settings: "
                              f"{', '.join(KEYS)})")
    try:
        return msgspec.convert(data, Config), lines, True
    except msgspec.ValidationError as e:
        message, _, at = str(e).partition(" - at `$")
        key = re.split(r"[.\[`]", at.lstrip("."), maxsplit=1)[0] if at else ""
        if not key:
            raise ConfigError(f"{path}: {message}") from None
        name, hint = key, get_type_hints(Config).get(key)
        sub = re.match(r"\.?team\.(\w+)", at)  # a key of the [team] table: name it, and its choices
        if sub:
            name, hint = f"team.{sub.group(1)}", get_type_hints(Team).get(sub.group(1))
        choices = get_args(hint)
        if message.startswith("Invalid enum value") and choices:
            message += f" (one of: {', '.join(choices)})"
        raise ConfigError(f"{_where(path, lines, key)}: bad value for '{name}': {message}") from None


def resolve(config_file: Path | None = None, overrides: dict[str, tuple[Any, str]] | None = None) -> Resolved:
    """Defaults, then the file, then ``overrides`` (``key -> (value, flag)`` from csmd's command line)."""
    from_flag = config_file is not None
    file = (config_file or paths.config_path()).expanduser().absolute()
    cfg, lines, exists = _read(file)
    if from_flag and not exists:
        raise ConfigError(f"config file not found: {file}")  # named on purpose: a typo, not "no settings"
    sources: dict[str, Setting] = {}
    given = msgspec.structs.asdict(cfg)
    defaults = msgspec.structs.asdict(Config())
    for key in KEYS:
        if key in lines:
            sources[key] = Setting(value=given[key], source="file", where=f"{file}:{lines[key]}")
        else:
            sources[key] = Setting(value=defaults[key], source="default")
    for key, (value, flag) in (overrides or {}).items():
        sources[key] = Setting(value=value, source="command line", where=flag)

    base = file.parent
    roots = sources["roots"]
    if roots.source == "default":
        env = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
        roots.value = [str(p.absolute()) for p in paths.claude_roots()]
        if env:
            roots.source, roots.where = "environment", "CLAUDE_CONFIG_DIR"
    else:
        roots.value = [str(_absolute(r, base if roots.source == "file" else None)) for r in roots.value]
    db = sources["db"]
    db.value = str(_absolute(db.value, base if db.source == "file" else None) if db.value else paths.db_path())
    team = sources["team"]
    if team.value is not None:
        given_team = team.value if isinstance(team.value, Team) else msgspec.convert(team.value, Team)
        team.value = msgspec.to_builtins(_team(given_team, team.where or str(file)))
    final = msgspec.convert({k: s.value for k, s in sources.items()}, Config)
    return Resolved(config=final, file=str(file), file_exists=exists,
                    file_source="command line" if from_flag else "default", sources=sources)


def _team(team: Team, where: str) -> Team:
    """``[team]`` checked (a connection, no password) and its names filled in (login, host name)."""
    if not team.dsn and not team.service:
        raise ConfigError(f"{where}: [team] needs 'dsn' (a libpq URL or conninfo) or 'service' (a pg_service.conf name)")
    if _has_password(team.dsn):
        raise ConfigError(f"{where}: [team] dsn holds a password: put it in libpq's password file (~/.pgpass, "
                          "mode 0600) or service file instead, so config.toml never carries it")
    return msgspec.structs.replace(team, member=team.member or getpass.getuser(),
                                   machine=team.machine or socket.gethostname())


def _has_password(dsn: str) -> bool:
    """A password in a URL's user part (``user:pw@``) or a ``password=`` keyword."""
    if "://" in dsn:
        netloc = urlsplit(dsn).netloc
        return ":" in netloc.rpartition("@")[0] or "password=" in urlsplit(dsn).query
    return re.search(r"(^|\s)password\s*=", dsn) is not None


def _absolute(p: str | Path, base: Path | None) -> Path:
    path = Path(p).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return Path(os.path.normpath(path))


_KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*[=.]""")
_TABLE = re.compile(r"""^\s*\[+\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))""")


def _key_lines(text: str) -> dict[str, int]:
    """The line of each top-level key (tomllib keeps no positions); tables count as keys."""
    lines: dict[str, int] = {}
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        m = _TABLE.match(line)
        if m:
            in_table = True
            name = next(g for g in m.groups() if g)
            lines.setdefault(name, number)
            continue
        m = _KEY.match(line)
        if m and not in_table:
            lines.setdefault(next(g for g in m.groups() if g), number)
    return lines


def _where(path: Path, lines: dict[str, int], key: str) -> str:
    return f"{path}:{lines[key]}" if key in lines else str(path)


def _syntax_error(path: Path, text: str, message: str) -> str:
    """``path:line: TOML syntax error: message (in 'key')`` from tomllib's ``... (at line N, column M)``."""
    m = re.search(r"\(at (?:line (\d+), column \d+|end of document)\)$", message)
    if not m:
        return f"{path}: {message}"
    number = int(m.group(1)) if m.group(1) else max(1, len(text.splitlines()))
    message = message[: m.start()].rstrip()
    source = text.splitlines()[number - 1] if number <= len(text.splitlines()) else ""
    key = _KEY.match(source)
    near = f" (in '{next(g for g in key.groups() if g)}')" if key else ""
    return f"{path}:{number}: TOML syntax error: {message}{near}"


LIVE: tuple[str, ...] = ("roots", "rescan_interval_s", "poll_interval_s", "log_level")
"""Settings a running csmd applies when asked to reload (``ReloadConfig``); the others need a restart."""


def reload(r: Resolved) -> Resolved:
    """Resolve again as csmd did at start: the same ``--config`` file (if one was named) and the same flags."""
    flags = {k: (s.value, s.where) for k, s in r.sources.items() if s.source == "command line"}
    return resolve(Path(r.file) if r.file_source == "command line" else None, flags)


def parse_value(key: str, text: str) -> Any:
    """A value typed by a person (``csm config set``, the settings page) as ``key`` takes it.

    TOML syntax is read first (``30``, ``true``, ``["a", "b"]``); a list key also takes
    comma-separated words, any other key a bare word as a string. Validation is ``write``'s.
    """
    if key not in KEYS:
        raise ConfigError(f"unknown setting '{key}' (known settings: {', '.join(KEYS)})")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    if isinstance(msgspec.structs.asdict(Config())[key], list) and not isinstance(value, list):
        value = [p.strip() for p in str(value).split(",") if p.strip()]
    return value


def write(file: Path, changes: dict[str, Any]) -> Resolved:
    """Set ``changes`` in the config file, keeping its other lines and comments; all or nothing.

    The new text is checked by the same resolver csmd uses (from a temporary file beside the
    real one, so relative paths read the same) and replaces the file atomically only if it passes.
    """
    for key in changes:
        if key not in KEYS:
            raise ConfigError(f"unknown setting '{key}' (known settings: {', '.join(KEYS)})")
        if key == "team":
            raise ConfigError("[team] is a table: edit it in the config file (README, \"Team\")")
    file = file.expanduser().absolute()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    lines = text.splitlines()
    for key, value in changes.items():
        new = f"{key} = {_toml(value)}"
        at = _key_lines("\n".join(lines)).get(key)
        if at is None:  # a new top-level key goes before the first table ([team]), or it would land inside it
            first_table = next((i for i, ln in enumerate(lines) if _TABLE.match(ln)), len(lines))
            lines.insert(first_table, new)
            continue
        end = at
        while end < len(lines):  # a value may span lines (an array): up to the first end that parses
            try:
                tomllib.loads("\n".join(lines[at - 1 : end]))
                break
            except tomllib.TOMLDecodeError:
                end += 1
        lines[at - 1 : end] = [new]
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            resolve(tmp)
        except ConfigError as e:
            raise ConfigError(str(e).replace(str(tmp), str(file))) from None
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)
    return resolve(file)


def _toml(value: Any) -> str:
    """A TOML value: strings as basic strings (JSON's escapes are TOML's), lists of them, numbers, booleans."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)

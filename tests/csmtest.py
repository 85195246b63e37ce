"""Test helpers: a real csmd subprocess, the real CLI, and waiting on conditions.

Every helper takes its environment from the test's isolated one (see conftest), so
nothing here can touch the real home directory.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from csm.shared.errors import DaemonNotRunning

T = TypeVar("T")


def isolated_env(base: Path) -> dict[str, str]:
    """The variables that point every path csm computes into ``base`` (tests, bench and soak alike):
    HOME, the XDG folders, Claude's config folder, and a runtime folder of its own under /tmp, short
    because unix socket paths are limited to ~104 bytes (remove it when done)."""
    (base / "home").mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="csm-", dir="/tmp"))
    run.chmod(0o700)
    return {
        "HOME": str(base / "home"), "XDG_DATA_HOME": str(base / "data"), "XDG_CONFIG_HOME": str(base / "config"),
        "XDG_STATE_HOME": str(base / "state"), "XDG_CACHE_HOME": str(base / "cache"), "XDG_RUNTIME_DIR": str(run),
        "CLAUDE_CONFIG_DIR": str(base / "claude"), "CSM_RAISE_ERRORS": "",
    }
FIXTURES = Path(__file__).parent / "fixtures"
REAL = FIXTURES / "real"
SHARED_REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"

WITHOUT_COMPRESSED_LINES = (
    "DROP TABLE search_text_pending; DROP INDEX events_plain; DROP TABLE compress_rewrite; DROP VIEW lines; "
    "ALTER TABLE events DROP COLUMN zraw; ALTER TABLE events DROP COLUMN dict_id; "
    "DROP TABLE raw_dictionaries; CREATE VIEW lines AS SELECT m.file_path, e.line_offset, e.uuid, "
    "e.parent_uuid, e.session_id, e.type, e.timestamp, e.raw, e.generation, e.generation = m.generation "
    "AS current FROM events e JOIN sync_metadata m ON m.file_id = e.file_id;")
"""SQL that takes migrations 9 (compressed lines), 10 (the backlog's search text) and 11 (compressed rows
rewritten, their index) back out of a database, for a test that makes one as a csm before them left it (the
lines view as migration 1 made it)."""

WITHOUT_TOOL_TEXT_UNSTEMMED = (
    "DROP TABLE search_tools_archived; DROP TABLE search_tools; CREATE VIRTUAL TABLE search_tools USING fts5(text, "
    "content='', tokenize='porter unicode61 remove_diacritics 2'); "
    "CREATE INDEX idx_session_timestamp ON events(session_id, timestamp);")
"""SQL that takes migration 13 (the tool text unstemmed) back out of a database: its tool-text index is then
the earlier one, stemmed, and empty; before ``WITHOUT_ARCHIVES``."""
WITHOUT_ARCHIVES = WITHOUT_TOOL_TEXT_UNSTEMMED + (
    " DROP TABLE archive_journal; DROP TABLE archived_files; DROP TABLE archives;")
"""SQL that takes migrations 13 and 12 (archives) back out of a database; before ``WITHOUT_COMPRESSED_LINES``."""


def wait_for(cond: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value {value!r})")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def run_csm(*args: str, env: dict[str, str] | None = None, timeout: float = 60, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """The real ``csm`` CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "csm.client", *args], env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout, input=input)


def csm_json(*args: str) -> Any:
    r = run_csm(*args, "--json")
    assert r.returncode == 0, f"csm {' '.join(args)} failed ({r.returncode}): {r.stderr}"
    return json.loads(r.stdout)


def sql(query: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of a read-only query, asked of the running csmd over its socket (in-process: fast
    enough to poll; tests of the CLI's own output use ``run_csm``)."""
    from csm.client.transport import request
    from csm.shared.protocol import Query, Rows

    reply = request(Query(sql=query, params=list(params)), timeout_s=10)
    assert isinstance(reply, Rows)
    return [dict(zip(reply.columns, r)) for r in reply.rows]


def status() -> dict[str, Any]:
    """``csm status --json``, asked in-process."""
    import msgspec

    from csm.client.transport import request
    from csm.shared.protocol import Status

    reply = request(Status(), timeout_s=10)
    # Every field, defaults included (the wire form omits them: last_sync_at None, files_gone 0).
    return {name: msgspec.to_builtins(getattr(reply, name)) for name in reply.__struct_fields__}


def scalar(query: str) -> Any:
    rows = sql(query)
    return next(iter(rows[0].values())) if rows else None


class Csmd:
    """A real csmd subprocess with the test's environment."""

    made: list[Csmd] = []
    """Every Csmd, in order: those a test made and left running are killed after it (``conftest.isolated``)."""

    def __init__(self, tmp: Path, args: list[str] | None = None, prefix: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        """``prefix`` runs csmd under another command (``unshare …``); ``env`` adds to the environment."""
        self.tmp = tmp
        self.args = args or []
        self.prefix = prefix or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / "csmd.log"
        self.starts = 0
        Csmd.made.append(self)

    def start(self, wait: bool = True, extra: list[str] | None = None) -> Csmd:
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"--- start {self.starts}\n".encode())
        log.flush()
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "csm.daemon", *self.args, *(extra or [])],
                                     stdout=log, stderr=log, env={**os.environ, **self.env})
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"csmd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return status().get("last_sync_at") is not None  # omitted (a default) until the first scan ends
            except DaemonNotRunning:
                return False

        wait_for(ready, timeout, "csmd to finish its first scan")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def db_rows(db: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the database directly (read-only), for checks the CLI does not expose; ``lines.raw`` is each line's
    text as csm reads it (a file older than ``compress_after_days`` may be stored compressed)."""
    from csm.daemon import rawtext

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        if conn.execute("SELECT 1 FROM pragma_table_info('events') WHERE name = 'zraw'").fetchone():
            rawtext.shadow_lines(rawtext.register(conn, db))
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def line_count(path: Path) -> int:
    """Complete lines in a file: what csm must have ingested (rows plus bad lines)."""
    return path.read_bytes().count(b"\n")


def sync_now() -> dict[str, Any]:
    """``csm sync --now``, asked in-process: a barrier after which csmd has seen every file as it is."""
    import msgspec

    from csm.client.transport import request
    from csm.shared.protocol import Sync, SyncReply

    reply = request(Sync(), timeout_s=60)
    assert isinstance(reply, SyncReply)
    return msgspec.to_builtins(reply)


def file_lines(path: Path) -> list[str]:
    """The complete lines of a file, as csm must store them (text without the newline)."""
    data = path.read_bytes()
    return [b.decode() for b in data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]]


def current_raws(db: Path, path: Path) -> list[str]:
    """The rows of a file as it is now (its current generation), in file order."""
    return [r[0] for r in db_rows(
        db, "SELECT raw FROM lines WHERE file_path = ? AND current ORDER BY line_offset", str(path))]


def all_raws(db: Path) -> dict[str, int]:
    """Every row ever stored, of every file and generation, as a multiset of raw lines."""
    from collections import Counter

    from csm.daemon.rawtext import RAW

    return dict(Counter(r[0] for r in db_rows(db, f"SELECT {RAW} FROM events e")))


def refused_start(csmd: Csmd) -> tuple[int, str]:
    """Start csmd expecting it to refuse: its exit code and what it printed for this start."""
    csmd.start(wait=False)
    assert csmd.proc is not None
    code = csmd.proc.wait(20)
    csmd.proc = None
    return code, csmd.log().rsplit(f"--- start {csmd.starts}\n", 1)[1]


@contextmanager
def raw_client(sock: Path | None = None) -> Iterator[Any]:
    """A bare ZeroMQ DEALER on csmd's socket, for sending what the CLI never would."""
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    try:
        s.connect(f"ipc://{sock or Path(os.environ['XDG_RUNTIME_DIR']) / 'csm' / 'csmd.sock'}")
        yield s
    finally:
        s.close()
        ctx.term()

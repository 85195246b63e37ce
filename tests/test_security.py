"""Who can reach csmd and its data: private folder and socket, peer uid check, no TCP, private files.

Some checks need a second user: they run when the tests run as root (as here) and are
skipped, saying why, otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import zmq  # noqa: F401 - imported before any fork: the other user may not read Python's files

from csm.shared import protocol

from csmtest import Csmd, csm_json, raw_client, refused_start, run_csm, scalar, wait_for
from lines import append, line

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to act as a second user")
OTHER_UID = 65534  # nobody


def runtime_csm() -> Path:
    return Path(os.environ["XDG_RUNTIME_DIR"]) / "csm"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def as_user(uid: int, fn: Callable[[], object]) -> object:
    """Run ``fn`` in a forked child that has become ``uid``; its JSON-able result.

    A fork, not a new interpreter: the other user may not read this Python's files.
    Everything ``fn`` needs is imported before the fork.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            result = {"ok": fn()}
        except BaseException as e:
            result = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "ok" in result, result
    return result["ok"]


def zmq_ask(sock: Path, payload: bytes) -> object:
    """One raw frame to csmd; the decoded reply, or None after 5 s."""
    with raw_client(sock) as s:
        s.send(payload)
        return msgspec.to_builtins(protocol.decode_reply(s.recv())) if s.poll(5000) else None


class TestTheSocket:
    def test_folder_0700_socket_0600_owned_by_the_user(self, csmd: Csmd) -> None:
        csmd.start()
        folder, sock = runtime_csm(), runtime_csm() / "csmd.sock"
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        assert mode(folder) == 0o700 and mode(sock) == 0o600
        assert os.lstat(folder).st_uid == os.lstat(sock).st_uid == os.getuid()

    def test_refuses_a_folder_open_to_others(self, csmd: Csmd) -> None:
        folder = runtime_csm()
        folder.mkdir(mode=0o700)
        folder.chmod(0o755)
        code, out = refused_start(csmd)
        assert code != 0
        assert out.strip().count("\n") == 0, out
        assert str(folder) in out and "open to others" in out and f"chmod 700 {folder}" in out
        assert not (folder / "csmd.sock").exists()
        assert mode(folder) == 0o755, "csmd must not silently change a folder it refused"

    def test_a_file_in_the_folders_place_is_reported(self, csmd: Csmd) -> None:
        runtime_csm().write_text("not a folder")
        code, out = refused_start(csmd)
        assert code != 0 and out.strip().count("\n") == 0, out
        assert out.startswith("csmd: error: ") and str(runtime_csm()) in out

    @needs_root
    def test_refuses_a_folder_of_another_user(self, csmd: Csmd) -> None:
        folder = runtime_csm()
        folder.mkdir(mode=0o700)
        os.chown(folder, OTHER_UID, OTHER_UID)
        code, out = refused_start(csmd)
        assert code != 0 and out.strip().count("\n") == 0, out
        assert str(folder) in out and f"belongs to uid {OTHER_UID}" in out
        assert not (folder / "csmd.sock").exists()

    def test_binds_no_tcp_or_udp_port(self, csmd: Csmd) -> None:
        csmd.start()
        assert csmd.proc is not None
        pid = csmd.proc.pid
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
        assert inodes, "csmd must hold at least its unix socket"
        unix = {ln.split()[6] for ln in Path("/proc/net/unix").read_text().splitlines()[1:] if len(ln.split()) > 6}
        assert inodes & unix, "the control socket must be a unix socket"
        for table in ("tcp", "tcp6", "udp", "udp6"):
            path = Path("/proc/net") / table
            if not path.exists():
                continue
            rows = path.read_text().splitlines()[1:]
            net = {r.split()[9] for r in rows if len(r.split()) > 9}
            assert not inodes & net, f"csmd holds a {table} socket"


class TestPeers:
    @needs_root
    def test_the_filesystem_keeps_other_users_out(self, csmd: Csmd) -> None:
        csmd.start()
        sock = runtime_csm() / "csmd.sock"

        def connect() -> str:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(sock))
                return "connected"
            except PermissionError:
                return "denied"
            finally:
                s.close()

        assert as_user(OTHER_UID, connect) == "denied"
        assert connect() == "connected"

    @needs_root
    def test_another_uid_is_refused_even_when_the_permissions_let_it_in(self, csmd: Csmd, projects: Path) -> None:
        append(projects / "p" / "s1.jsonl", line(0))
        csmd.start()
        sock = runtime_csm() / "csmd.sock"
        # Someone opens the folder up after csmd started: the uid check still holds.
        Path(os.environ["XDG_RUNTIME_DIR"]).chmod(0o711)
        runtime_csm().chmod(0o711)
        sock.chmod(0o666)
        for msg in (protocol.Status(), protocol.Query(sql="SELECT raw FROM lines")):
            got = as_user(OTHER_UID, lambda: zmq_ask(sock, protocol.encode(msg)))
            assert got == {"type": "Error", "code": "forbidden", "message": f"this csmd serves only uid {os.getuid()}"}
        assert f"refused a request from uid {OTHER_UID}" in csmd.log()
        assert csmd.log().count("refused a request") == 1, "one log line per uid, not one per request"
        assert zmq_ask(sock, protocol.encode(protocol.Status()))["type"] == "StatusReply"  # type: ignore[index]
        assert csm_json("status")["events"] == 1, "the owner is still served"

    def test_a_request_must_be_one_frame(self, csmd: Csmd) -> None:
        csmd.start()
        with raw_client() as s:
            s.send_multipart([protocol.encode(protocol.Status()), b"extra"])
            assert s.poll(5000)
            reply = protocol.decode_reply(s.recv_multipart()[-1])
            assert isinstance(reply, protocol.Error) and reply.code == "bad_request"
            s.send(protocol.encode(protocol.Status()))
            assert s.poll(5000)
            assert isinstance(protocol.decode_reply(s.recv()), protocol.StatusReply)


class TestPrivateFiles:
    def test_database_wal_shm_and_lock_are_0600_whatever_the_umask(self, csmd: Csmd, projects: Path,
                                                                     db: Path) -> None:
        old = os.umask(0o022)  # csmd inherits a permissive umask
        try:
            append(projects / "p" / "s1.jsonl", b"".join(line(i) for i in range(50)))
            csmd.start()
        finally:
            os.umask(old)
        append(projects / "p" / "s1.jsonl", line(50))
        wait_for(lambda: scalar("SELECT count(*) FROM lines") == 51, what="the appended line")
        files = [db, db.with_name("csm.db-wal"), db.with_name("csm.db-shm"), db.with_name("csm.db.lock")]
        for f in files:
            assert f.exists(), f
            assert mode(f) == 0o600, f"{f.name} is {mode(f):o}"
        assert mode(db.parent) == 0o700

    def test_a_database_open_to_others_is_closed(self, csmd: Csmd, projects: Path, db: Path) -> None:
        append(projects / "p" / "s1.jsonl", line(0))
        csmd.start()
        conn = sqlite3.connect(db)  # leaves -wal and -shm behind while it is open
        conn.execute("PRAGMA journal_mode")
        csmd.stop()
        for f in (db, db.with_name("csm.db-wal"), db.with_name("csm.db-shm")):
            assert f.exists(), f
            f.chmod(0o644)
        csmd.start()
        conn.close()
        for f in (db, db.with_name("csm.db-wal"), db.with_name("csm.db-shm")):
            assert mode(f) == 0o600, f
        assert run_csm("status").returncode == 0

    @needs_root
    @pytest.mark.parametrize("name", ["csm.db", "csm.db-wal", "csm.db-shm", "csm.db.lock"])
    def test_files_made_in_advance_by_another_user_are_refused(self, csmd: Csmd, projects: Path, db: Path,
                                                               name: str) -> None:
        """Another user pre-creates the database's files 0666 where csmd will put them (a shared folder):
        csmd must not write transcripts into them; it says which file, whose, and what to do."""
        append(projects / "p" / "s1.jsonl", line(0))
        db.parent.mkdir(parents=True, mode=0o700)
        planted = db.with_name(name)
        planted.touch()
        os.chown(planted, OTHER_UID, OTHER_UID)
        planted.chmod(0o666)
        code, out = refused_start(csmd)
        assert code == 77, (code, out)
        assert out.strip().count("\n") == 0 and out.startswith("csmd: error: "), out
        assert str(planted) in out and f"uid {OTHER_UID}" in out and "0666" in out and "remove it" in out, out
        assert planted.stat().st_size == 0 and planted.stat().st_uid == OTHER_UID, "csmd wrote into it"
        assert not list(db.parent.glob("csm.db*-wal")) or name == "csm.db-wal"
        planted.unlink()
        csmd.start()  # the fix the message gives works
        assert scalar("SELECT count(*) FROM lines") == 1

    @needs_root
    def test_a_symlink_of_another_user_in_the_databases_place_is_refused(self, csmd: Csmd, db: Path) -> None:
        db.parent.mkdir(parents=True, mode=0o700)
        target = db.with_name("mine.db")
        target.touch()
        db.symlink_to(target)
        os.lchown(db, OTHER_UID, OTHER_UID)
        code, out = refused_start(csmd)
        assert code == 77 and out.strip().count("\n") == 0, out
        assert str(db) in out and "symlink" in out and f"uid {OTHER_UID}" in out, out

    def test_a_lock_file_open_to_others_is_closed(self, csmd: Csmd, db: Path) -> None:
        lock = db.with_name("csm.db.lock")
        lock.parent.mkdir(parents=True, mode=0o700)
        lock.touch()
        lock.chmod(0o644)
        csmd.start()
        assert mode(lock) == 0o600


class TestTheSocketFolderIsNotFollowed:
    def test_a_symlink_in_the_socket_folders_place_is_refused(self, csmd: Csmd, tmp_path: Path) -> None:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        runtime_csm().symlink_to(elsewhere)
        code, out = refused_start(csmd)
        assert code == 77 and out.strip().count("\n") == 0, out
        assert str(runtime_csm()) in out and "symlink" in out, out
        assert not (elsewhere / "csmd.sock").exists()

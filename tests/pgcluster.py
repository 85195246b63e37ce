"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb and pg_ctl as an unprivileged user.

The server refuses to run as root, and tests run as root in CI, so the cluster's folder belongs to
``nobody`` and the server runs as ``nobody`` (``setpriv``); it listens only on a unix socket in that
folder (no TCP port, nothing shared with a system service). Connections use ``trust`` over that
socket, so roles have no passwords: the tests are about which role may do what (row-level security),
not about authentication, which libpq's own files handle.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

ADMIN = "postgres"


def pg_bin() -> Path | None:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/<major>/bin), or one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server is not installed (Debian: apt-get install postgresql)")
        self.bin = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="csm-pg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.sock = self.dir  # the socket folder; short, under /tmp (unix socket paths are limited)
        self.user = "nobody" if os.geteuid() == 0 else None
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.dir.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-U", ADMIN, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
                  "--no-sync")

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / tool), *args]
        if self.user:
            cmd = ["setpriv", f"--reuid={self.user}", f"--regid={pwd.getpwnam(self.user).pw_gid}", "--clear-groups",
                   *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dir)
        if r.returncode != 0:
            raise RuntimeError(f"{tool} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def start(self) -> None:
        opts = f"-c listen_addresses='' -c unix_socket_directories={self.sock} -c fsync=off -c max_connections=50"
        if self.tls_port:
            opts += (f" -c listen_addresses=127.0.0.1 -c port={self.tls_port} -c ssl=on"
                     f" -c ssl_cert_file={self.dir / 'server.crt'} -c ssl_key_file={self.dir / 'server.key'}")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", opts, "-w", "start")

    tls_port = 0

    def enable_tls(self) -> None:
        """Also listen on loopback TCP, TLS only (a self-signed certificate made by the openssl tool), from
        the next ``start``: the unix socket stays as it is. The server's port is ``tls_port``."""
        import socket

        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-keyout", str(self.dir / "server.key"), "-out", str(self.dir / "server.crt")],
                       check=True, capture_output=True, timeout=60)
        for f in ("server.key", "server.crt"):
            if self.user:
                pw = pwd.getpwnam(self.user)
                os.chown(self.dir / f, pw.pw_uid, pw.pw_gid)
            (self.dir / f).chmod(0o600)
        with (self.data / "pg_hba.conf").open("a") as f:
            f.write("hostssl all all 127.0.0.1/32 trust\n")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.tls_port = s.getsockname()[1]

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def dsn(self, user: str = ADMIN, dbname: str = "csm") -> str:
        return f"host={self.sock} user={user} dbname={dbname}"

    def create_db(self, name: str = "csm") -> None:
        import psycopg

        with psycopg.connect(self.dsn(dbname="postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

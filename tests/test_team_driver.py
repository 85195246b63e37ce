"""``csm.team.driver``: psycopg imported for csmd without Python's ``ssl`` (4.2 MB of RSS), and with it
when this psycopg needs it. Each case is a fresh interpreter: the import is once per process."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("psycopg")
from pgcluster import ADMIN, Cluster  # noqa: E402
from teamtest import needs_postgres  # noqa: E402


def load(**env: str) -> list[str]:
    """What ``driver.load`` did in a fresh interpreter: the implementation, whether ``ssl`` was
    imported by it, and whether ``ssl`` can still be imported and used afterwards."""
    code = ("import sys; from csm.team import driver; m = driver.load(); "
            "loaded = 'ssl' in sys.modules; import ssl; ssl.create_default_context(); "
            "print(m.pq.__impl__, loaded, callable(m.connect))")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_psycopg_is_imported_without_ssl_and_ssl_still_works_after() -> None:
    import psycopg

    if psycopg.pq.__impl__ not in ("binary", "c"):
        pytest.skip("psycopg's ctypes implementation imports ssl itself")
    assert load() == [psycopg.pq.__impl__, "False", "True"]


@pytest.mark.skipif(ctypes.util.find_library("pq") is None, reason="the system's libpq is not installed")
def test_a_psycopg_that_needs_ssl_gets_it() -> None:
    """The ctypes implementation over the system's libpq imports ``ssl`` to share OpenSSL's callbacks:
    the blocked import fails, and psycopg is imported again with ``ssl`` instead of csmd failing."""
    assert load(PSYCOPG_IMPL="python") == ["python", "True", "True"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl tool is not installed")
@needs_postgres
def test_tls_connections_work_without_pythons_ssl() -> None:
    """libpq does TLS with the OpenSSL psycopg's wheel bundles, not Python's: a connection made after
    ``driver.load`` negotiates TLS (the server says so) with ``ssl`` never imported."""
    cluster = Cluster()
    cluster.enable_tls()
    cluster.start()
    try:
        dsn = f"host=127.0.0.1 port={cluster.tls_port} user={ADMIN} dbname=postgres sslmode=require"
        code = ("import sys; from csm.team import driver; conn = driver.load().connect(sys.argv[1]); "
                "print(conn.execute('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()').fetchone()[0], "
                "'ssl' in sys.modules)")
        r = subprocess.run([sys.executable, "-c", code, dsn], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["True", "False"]
    finally:
        cluster.destroy()

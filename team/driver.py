"""psycopg, imported for csmd without Python's ``ssl`` module: 4.2 MB less RSS in team mode.

psycopg has no sync-only import: ``psycopg.errors`` and ``psycopg.waiting`` import ``asyncio``, and
asyncio imports ``ssl`` for its TLS transports, which loads ``_ssl`` with the system's libssl and
libcrypto and initialises OpenSSL (RssFile +2.8 MB, RssAnon +1.4 MB, measured after csmd's own
modules). csmd never uses asyncio, and libpq does its own TLS with the OpenSSL that psycopg's
binary wheel bundles, so none of that is used: the mirror's connections, TLS ones included, go
through libpq alone.

asyncio is written to work without ``ssl`` (CPython can be built without OpenSSL): each of its
``import ssl`` is guarded and sets ``ssl = None``. A ``None`` in ``sys.modules`` makes ``import
ssl`` raise ImportError (the import system's documented way to block a module), so while psycopg
is first imported ``ssl`` is blocked, and it is unblocked right after: a later ``import ssl``
anywhere works as usual; only asyncio's own TLS stays off in this process, which csmd does not use.

Should this psycopg need ``ssl`` itself (its ctypes implementation, over the system libpq, imports
it to share OpenSSL's callbacks, and is the fallback when no binary one is installed; a future
release might too), the blocked import fails with ImportError and psycopg is imported again with
``ssl`` allowed: the cost is the 4.2 MB, never a failure (tests/test_team_driver.py; test_team
checks that a mirroring csmd has mapped no libssl or libcrypto but psycopg's). Only csmd calls this, from the main thread before its threads import
anything; the CLI and ``csm serve`` import psycopg as usual.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

log = logging.getLogger("csm.team")


def load() -> ModuleType:
    """psycopg, imported now (without ``ssl`` if nothing has imported ``ssl`` yet)."""
    if "psycopg" in sys.modules or "ssl" in sys.modules:
        import psycopg

        return psycopg
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import psycopg
    except ImportError as e:
        log.debug("team: psycopg needs Python's ssl module (%s); importing it with ssl", e)
        del sys.modules["ssl"]
        import psycopg
    finally:
        if "ssl" in sys.modules and sys.modules["ssl"] is None:
            del sys.modules["ssl"]
    return psycopg

"""Typed errors shared by the daemon and the CLI.

Each class carries the exit code a script can rely on; the CLI turns any of them
into one line on stderr in one place (``csm.client.cli.main``). Messages are
written for the user: what went wrong and what to do about it. An error csmd
answers with travels as ``protocol.Error`` with its class's ``code``; the client
raises the class of that code again (``from_code``), so the pairing is made here
and nowhere else.
"""

from __future__ import annotations


class CsmError(Exception):
    """Base of every error csm reports to a user."""

    exit_code = 1
    code: str | None = None
    """The ``protocol.Error`` code csmd answers this error with; None: never sent."""


class PathError(CsmError):
    """A path csm needs cannot be used."""


class NotPrivate(PathError):
    """A file or folder that would hold or reach the archive belongs to another user, or is a symlink
    where csm needs the real thing: using it could hand the transcripts to someone else."""

    exit_code = 77  # EX_NOPERM


class ConfigError(CsmError):
    """The config file is invalid."""

    exit_code = 78  # EX_CONFIG
    code = "config"


class DaemonNotRunning(CsmError):
    """No csmd answers on the control socket."""

    exit_code = 3


class ServeNotRunning(CsmError):
    """No ``csm serve`` is running for ``csm serve --url`` to name."""

    exit_code = 3


class DaemonError(CsmError):
    """csmd answered with an error; this class itself stands for a failure inside csmd (a bug)."""

    exit_code = 1
    code = "internal"


class Unavailable(DaemonError):
    """csmd cannot do it now: its database is locked by another program, or the disk is full.
    csmd keeps retrying by itself; the same request later may succeed."""

    exit_code = 75  # EX_TEMPFAIL
    code = "unavailable"


class QueryError(DaemonError):
    """A query was refused or failed (bad SQL, a write, a limit hit)."""

    exit_code = 4
    code = "query"


class NotFound(DaemonError):
    """A session, file or other named thing does not exist."""

    exit_code = 5
    code = "not_found"


class BadRequest(DaemonError):
    """A request csmd cannot read, or one it does not take in this mode (faults outside tests)."""

    code = "bad_request"


class Busy(DaemonError):
    """csmd has as many queries running or waiting as it takes (``query_queue``)."""

    code = "busy"


class Forbidden(DaemonError):
    """A request from another user than csmd's."""

    code = "forbidden"


class ArchiveUnreadable(DaemonError):
    """An archive file (``csm archive``) is missing or damaged: the sessions in it cannot be read, the rest can."""

    exit_code = 6
    code = "archive"


def from_code(code: str) -> type[CsmError]:
    """The class of an error csmd answered with; an unknown code (a newer csmd's) is a ``DaemonError``."""
    todo: list[type[CsmError]] = [CsmError]
    while todo:
        cls = todo.pop()
        if cls.code == code:
            return cls
        todo.extend(cls.__subclasses__())
    return DaemonError


class Conflict(CsmError):
    """A file csm would write is already there with other contents: csm never overwrites it."""

    exit_code = 73  # EX_CANTCREAT


class AlreadyRunning(CsmError):
    """Another csmd holds the lock."""

    exit_code = 1


class DatabaseError(CsmError):
    """The database cannot be opened or used."""

    exit_code = 1


class NoSpace(DatabaseError):
    """The database's filesystem is full: the archive is fine, it only cannot grow."""

    exit_code = 75  # EX_TEMPFAIL


class Locked(DatabaseError):
    """Another program holds the database's write lock (a sqlite3 shell in a transaction)."""

    exit_code = 75  # EX_TEMPFAIL


class NoPermission(DatabaseError):
    """The database or its folder cannot be written by this user: the archive is fine."""

    exit_code = 77  # EX_NOPERM


class ServiceError(CsmError):
    """Installing or removing the login service failed (the manager refused, or this OS has none csm knows)."""

    exit_code = 1


class ServiceManagerMissing(ServiceError):
    """No service manager is reachable from here (a container, a session without a user manager)."""

    exit_code = 69  # EX_UNAVAILABLE


class TeamUnavailable(CsmError):
    """The team's PostgreSQL cannot be reached or refused what was asked (team mode off, no driver,
    no connection, no permission): the message says which."""

    exit_code = 69  # EX_UNAVAILABLE

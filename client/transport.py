"""Talking to csmd: one DEALER socket per request, closed after it (the Lazy Pirate rule).

ZeroMQ's ``connect`` succeeds even when nobody listens, and a REQ socket jams after
a lost reply, so "is the daemon there?" is answered before ZeroMQ is involved: no
socket file, or a socket file nobody accepts on (a stale one after a crash), means
not running, at once. Past that, every wait has a deadline; long requests stream
``Progress`` messages that both feed a progress bar and prove the daemon is alive.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from csm.shared import paths, protocol
from csm.shared.errors import DaemonError, DaemonNotRunning, from_code
from csm.shared.protocol import Error, Message, Ok, Watching

START_HINT = "start it with 'csmd' (or 'csm service install' to run it at login)"


def _unreachable(sock: Path, e: OSError) -> DaemonNotRunning:
    """Why the socket's folder cannot be looked into, named with its owner and mode, and the fix.

    A csmd no one can reach counts as not running, so commands that can do without it still do.
    """
    for f in (*reversed(sock.parents), sock):
        try:
            st = os.lstat(f)
        except OSError:
            break
        if f != sock and not stat.S_ISDIR(st.st_mode):
            return DaemonNotRunning(f"cannot reach csmd's socket {sock}: {f} is not a folder; point XDG_RUNTIME_DIR at "
                             "your own runtime folder (usually /run/user/$(id -u)), or unset it")
        if f != sock and not os.access(f, os.X_OK, effective_ids=True):
            fix = f", or run 'chmod 700 {f}'" if st.st_uid == os.geteuid() else ""
            return DaemonNotRunning(
                f"cannot reach csmd's socket {sock}: no permission to enter {f} (owner uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):04o}, you are uid {os.geteuid()}); point XDG_RUNTIME_DIR at your "
                f"own runtime folder (usually /run/user/$(id -u)){fix}")
    return DaemonNotRunning(f"cannot reach csmd's socket {sock}: {e.strerror}")


def _check_listening(sock: Path) -> None:
    try:
        os.stat(sock)
    except FileNotFoundError:
        raise DaemonNotRunning(f"csmd is not running (no socket at {sock}); {START_HINT}") from None
    except OSError as e:  # EACCES, ENOTDIR: an XDG_RUNTIME_DIR that is not ours, not open to us, or not a folder
        raise _unreachable(sock, e) from None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(sock))
    except (ConnectionRefusedError, FileNotFoundError):
        raise DaemonNotRunning(f"csmd is not running (stale socket at {sock}); {START_HINT}") from None
    except OSError as e:
        raise DaemonNotRunning(f"cannot reach csmd at {sock}: {e.strerror}; {START_HINT}") from None
    finally:
        probe.close()


@contextmanager
def _sent(msg: Message, sock: Path | None) -> Iterator[tuple[Any, Path]]:
    """A DEALER socket that has sent ``msg`` to csmd (and the socket path, for messages); closed after."""
    import zmq  # here, so that 'csm --help' does not pay for it

    sock = sock or paths.socket_path()
    _check_listening(sock)
    s: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.setsockopt(zmq.IMMEDIATE, 1)
    try:
        s.connect(paths.endpoint(sock))
        s.send(protocol.encode(msg))
        yield s, sock
    finally:
        s.close(linger=0)


def _ack(reply: Message) -> bytes | None:
    """The ``Ack`` of a streamed piece (``Chunk``, ``Messages``), sent once its consumer has handled it:
    csmd sends only a few pieces ahead of the last one acknowledged (see ``daemon/export.py``)."""
    if isinstance(reply, (protocol.Chunk, protocol.Messages)):
        return protocol.encode(protocol.Ack(seq=reply.seq))
    return None


def request(
    msg: Message,
    *,
    timeout_s: float = 10.0,
    on_progress: Callable[[Any], None] | None = None,
    sock: Path | None = None,
) -> Message:
    """Send ``msg`` and return the final reply; ``timeout_s`` bounds each wait for a message.

    Streamed replies before it (``Progress``, ``Chunk``) go to ``on_progress``, in order; each
    piece is acknowledged once it returns (``_ack``).
    """
    with _sent(msg, sock) as (s, path):
        while True:
            if not s.poll(int(timeout_s * 1000)):
                raise DaemonNotRunning(
                    f"csmd did not answer within {timeout_s:g} s on {path}; check 'csm service logs' or restart csmd"
                )
            reply = protocol.decode_reply(s.recv())
            if not isinstance(reply, protocol.FINAL_REPLIES):
                if on_progress is not None:
                    on_progress(reply)
                if (ack := _ack(reply)) is not None:
                    s.send(ack)
                continue
            if isinstance(reply, Error):
                raise from_code(reply.code)(reply.message)
            return reply


class _Gathered:
    """A streamed conversation's ``Messages``, checked for a lost one, then put into the ``Transcript`` that ends it."""

    def __init__(self) -> None:
        self.entries: list[protocol.Entry] = []
        self.seq = 0

    def __call__(self, msg: Message) -> None:
        if isinstance(msg, protocol.Messages):
            if msg.seq != self.seq:
                raise DaemonError(f"the conversation was interrupted: piece {self.seq} was lost; run it again")
            self.entries += msg.entries
            self.seq += 1

    def transcript(self, reply: Message) -> protocol.Transcript:
        assert isinstance(reply, protocol.Transcript)
        if reply.entries:  # an older csmd sends them all in this one reply
            return reply
        if len(self.entries) != reply.total:
            raise DaemonError(f"the conversation is incomplete: got {len(self.entries)} of {reply.total} entries; "
                              "run it again")
        reply.entries = self.entries
        return reply


def conversation(show: protocol.Show, *, timeout_s: float = 30.0) -> protocol.Transcript:
    """A whole conversation (``show`` without a limit): csmd streams its entries, acknowledged as they come."""
    gathered = _Gathered()
    return gathered.transcript(request(msgspec.structs.replace(show, stream=True), timeout_s=timeout_s,
                                       on_progress=gathered))


async def aconversation(show: protocol.Show, *, timeout_s: float = 30.0) -> protocol.Transcript:
    """``conversation`` for asyncio (``csm serve``'s exports)."""
    gathered = _Gathered()
    return gathered.transcript(await arequest(msgspec.structs.replace(show, stream=True), timeout_s=timeout_s,
                                              on_progress=gathered))


def subscribe(msg: Message, *, timeout_s: float = 10.0, sock: Path | None = None) -> Iterator[Message]:
    """Send a subscription and yield what the daemon pushes until it ends it (``Ok``).

    The daemon sends a heartbeat every ``Watching.heartbeat_s``; three missed in a row
    mean it is gone (killed, or the machine slept), which is reported like any dead daemon.
    """
    with _sent(msg, sock) as (s, path):
        wait_s = timeout_s
        while True:
            if not s.poll(int(wait_s * 1000)):
                raise DaemonNotRunning(f"csmd stopped answering (nothing for {wait_s:g} s on {path}); "
                                       "check 'csm status'")
            reply = protocol.decode_reply(s.recv())
            if isinstance(reply, Error):
                raise from_code(reply.code)(reply.message)
            if isinstance(reply, Watching):
                wait_s = 3 * reply.heartbeat_s + 1
            yield reply
            if (ack := _ack(reply)) is not None:
                s.send(ack)
            if isinstance(reply, Ok):
                return


# --- the same, for asyncio (``csm serve``): one socket per request, the same deadlines and errors ---


async def arequest(msg: Message, *, timeout_s: float = 10.0, on_progress: Callable[[Any], Any] | None = None,
                   sock: Path | None = None) -> Message:
    """``request`` without blocking the event loop (``zmq.asyncio``); ``on_progress`` may be a coroutine."""
    import inspect

    async for reply in _astream(msg, timeout_s, sock, lambda r: None):
        if isinstance(reply, protocol.FINAL_REPLIES):
            return reply
        if on_progress is not None:
            done = on_progress(reply)
            if inspect.isawaitable(done):
                await done
    raise AssertionError("unreachable: a stream ends with a final reply")


async def asubscribe(msg: Message, *, timeout_s: float = 10.0, sock: Path | None = None) -> Any:
    """``subscribe`` for asyncio: an async iterator of what csmd pushes, until it ends it (``Ok``)."""
    async for reply in _astream(msg, timeout_s, sock, lambda r: 3 * r.heartbeat_s + 1 if isinstance(r, Watching)
                                else None):
        yield reply
        if isinstance(reply, Ok):
            return


async def _astream(msg: Message, timeout_s: float, sock: Path | None,
                   next_wait: Callable[[Message], float | None]) -> Any:
    """Send ``msg`` on a fresh DEALER and yield replies until a final one; each wait has a deadline."""
    import zmq
    import zmq.asyncio

    sock = sock or paths.socket_path()
    _check_listening(sock)
    s = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.setsockopt(zmq.IMMEDIATE, 1)
    try:
        s.connect(paths.endpoint(sock))
        await s.send(protocol.encode(msg))
        wait_s = timeout_s
        while True:
            if not await s.poll(int(wait_s * 1000)):
                raise DaemonNotRunning(f"csmd did not answer within {wait_s:g} s on {sock}; "
                                       "check 'csm service logs' or restart csmd")
            reply = protocol.decode_reply(await s.recv())
            if isinstance(reply, Error):
                raise from_code(reply.code)(reply.message)
            wait_s = next_wait(reply) or wait_s
            yield reply
            if (ack := _ack(reply)) is not None:
                await s.send(ack)
            if isinstance(reply, protocol.FINAL_REPLIES):
                return
    finally:
        s.close(linger=0)

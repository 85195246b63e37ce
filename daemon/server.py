"""The control socket: a ZeroMQ ROUTER on ``ipc://`` in the user's private runtime dir.

Only the main thread touches ZeroMQ. Other threads answer through ``post``, which
puts the reply in an outbox and wakes the main loop through a pipe (the same pipe
signals use), so the loop blocks in ``poll`` with no timeout and an idle daemon
wakes only when something happens.

A request is one frame (after the routing envelope); anything malformed or unknown
gets an ``Error`` reply and the loop goes on. A frame over ``MAX_REQUEST_BYTES`` never
reaches Python: libzmq drops that peer's connection (``MAXMSGSIZE``).

Who may ask: the socket sits in a 0700 folder and is 0600, so the kernel keeps other
users out; on top of that every message's sender uid (``SO_PEERCRED``, which libzmq
exposes as the frame's ``Peer-Address`` property, ``"<host>:uid:gid:pid"``) must be ours.
Root can pass the file permissions, not this check.
"""

from __future__ import annotations

import logging
import math
import os
import queue
from collections.abc import Callable
from pathlib import Path

import zmq

from csm.daemon.private import private_dir
from csm.shared import paths, protocol
from csm.shared.errors import BadRequest, DaemonError, Forbidden
from csm.shared.protocol import Error, Message

log = logging.getLogger("csm.server")

Envelope = list[bytes]
Reply = Callable[[Message], None]
Dispatch = Callable[[protocol.Request, Reply], None]


def peer_uid(frame: zmq.Frame) -> int | None:
    """The sender's uid from the frame's ``Peer-Address`` (None where libzmq does not say)."""
    try:
        address = frame.get("Peer-Address")
    except (zmq.ZMQError, ValueError, TypeError):
        return None
    parts = str(address).rsplit(":", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return int(parts[1])


class Replier:
    """Replies to one client from any thread; ``envelope`` names the client for later pushes."""

    __slots__ = ("server", "envelope")

    def __init__(self, server: Server, envelope: Envelope) -> None:
        self.server = server
        self.envelope = envelope

    def __call__(self, msg: Message) -> None:
        self.server.post(self.envelope, msg)


class Server:
    def __init__(self, sock_path: Path) -> None:
        self.sock_path = sock_path
        self.ctx = zmq.Context()
        self.ctx.linger = 0
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REQUEST_BYTES)
        self.router.sndhwm = 10_000
        self.outbox: queue.SimpleQueue[tuple[Envelope, bytes]] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.stopping = False
        self.uid = os.getuid()
        self.rejected: set[int] = set()
        self.dropped: list[Callable[[Envelope, int], None]] = []
        """Called (main thread) with the envelope and errno of a message that could not be delivered."""

    def bind(self) -> None:
        """Bind the socket; the caller holds the single-instance lock, so a leftover file is stale."""
        private_dir(self.sock_path.parent)
        try:
            self.sock_path.unlink()
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            self.router.bind(paths.endpoint(self.sock_path))
        finally:
            os.umask(old)
        os.chmod(self.sock_path, 0o600)

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def post(self, envelope: Envelope, msg: Message) -> None:
        """Send a reply from any thread."""
        self.post_encoded(envelope, protocol.encode(msg))

    def post_encoded(self, envelope: Envelope, data: bytes) -> None:
        """Send an already encoded reply from any thread (a caller that needs its size)."""
        self.outbox.put((envelope, data))
        self.wake()

    def replier(self, envelope: Envelope) -> Replier:
        return Replier(self, envelope)

    def serve(self, dispatch: Dispatch, tick: Callable[[], float | None] | None = None) -> None:
        """Run until ``stop``; ``tick`` runs first and after every wake-up, and returns the next timeout (s)."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        timeout = tick() if tick is not None else None
        while not self.stopping:
            ready = dict(poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000))))
            if self.router in ready:
                self._receive(dispatch)
            if self.wake_r in ready:
                try:
                    while os.read(self.wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            self._flush()
            if tick is not None:
                timeout = tick()
        self._flush()

    def _receive(self, dispatch: Dispatch) -> None:
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            envelope = [frames[0].bytes]
            if len(frames) >= 3 and not frames[1].bytes:
                envelope.append(b"")  # a REQ client: keep its empty delimiter
            reply = self.replier(envelope)
            uid = peer_uid(frames[-1])
            if uid is not None and uid != self.uid:
                if uid not in self.rejected and len(self.rejected) < 100:
                    self.rejected.add(uid)
                    log.warning("refused a request from uid %d (%s): csmd serves only uid %d", uid,
                                frames[-1].get("Peer-Address"), self.uid)
                reply(Error.of(Forbidden(f"this csmd serves only uid {self.uid}")))
                continue
            if len(frames) != len(envelope) + 1:
                reply(Error.of(BadRequest("malformed request: expected exactly one frame")))
                continue
            try:
                request = protocol.decode_request(frames[-1].buffer)
            except Exception as e:  # DecodeError, ValidationError, UnicodeDecodeError (bad UTF-8 in a str)…
                reply(Error.of(BadRequest(f"malformed request: {e}")))
                continue
            try:
                dispatch(request, reply)
            except Exception as e:  # a bug must not take the daemon down
                log.exception("request %s failed", type(request).__name__)
                reply(Error.of(DaemonError(f"{type(e).__name__}: {e}")))

    def _flush(self) -> None:
        while True:
            try:
                envelope, data = self.outbox.get_nowait()
            except queue.Empty:
                return
            try:
                self.router.send_multipart([*envelope, data], zmq.NOBLOCK)
            except zmq.ZMQError as e:
                # EHOSTUNREACH: the client went away (ROUTER_MANDATORY); EAGAIN: it stopped reading.
                log.debug("reply dropped: %s", e)
                for hook in self.dropped:
                    hook(envelope, e.errno or 0)

    def stop(self) -> None:
        self.stopping = True
        self.wake()

    def close(self) -> None:
        self.router.close(linger=0)
        self.ctx.term()
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)
        try:
            self.sock_path.unlink()
        except FileNotFoundError:
            pass

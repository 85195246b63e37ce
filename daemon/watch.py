"""``csm watch``: new messages pushed to subscribers as the writer commits them.

The ingest thread calls ``committed`` after each batch (``Watchers`` is a sink), with the views it
decoded the batch's lines into; matching subscribers get one
``Messages`` reply each through the server's thread-safe ``post``, which only queues, so
ingestion never waits for a client. Each subscriber acknowledges every ``Messages`` it has
printed (``Ack``); one that reads too slowly (or is stopped) gets nothing more once
``BUDGET_BYTES`` of messages wait for it, and what it misses is counted (reported in the next
``Heartbeat``), so a stopped ``csm watch`` pins at most that much of csmd's memory. One that
went away makes the send fail with EHOSTUNREACH (ROUTER_MANDATORY) and is forgotten. Heartbeats every
``HEARTBEAT_S`` let a client notice a dead daemon, and the daemon a dead client.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from csm.daemon import projects
from csm.daemon.browse import Place
from csm.daemon.conversation import Builder, one_line
from csm.daemon.server import Envelope, Server
from csm.daemon.sinks import Sink
from csm.daemon.store import FileRow
from csm.shared.protocol import Heartbeat, Messages, Ok, Watching, encode

if TYPE_CHECKING:
    from csm.daemon.batch import Batch

log = logging.getLogger("csm.watch")

HEARTBEAT_S = 2.0
TEXT_MAX = 2000
BUDGET_BYTES = 4 << 20
"""Encoded messages sent to one subscriber and not yet acknowledged, past which more are dropped."""
_CONVERSATION = frozenset({"user", "assistant", "summary", "system"})


class Subscriber:
    def __init__(self, envelope: Envelope, session: Place | None, project: str | None) -> None:
        self.envelope = envelope
        self.session = session
        self.project = project
        self.missed = 0
        self.seq = 0
        self.unacked: deque[tuple[int, int]] = deque()
        """(seq, size) of the messages sent and not yet acknowledged, oldest first."""
        self.unacked_bytes = 0

    def admit(self, size: int) -> int | None:
        """The seq for one more message of ``size`` bytes, or None (counted as missed) over the budget.
        A subscriber with nothing in flight always gets the next one, however large."""
        if self.unacked and self.unacked_bytes + size > BUDGET_BYTES:
            self.missed += 1
            return None
        seq = self.seq
        self.seq += 1
        self.unacked.append((seq, size))
        self.unacked_bytes += size
        return seq

    def ack(self, seq: int) -> None:
        while self.unacked and self.unacked[0][0] <= seq:
            self.unacked_bytes -= self.unacked.popleft()[1]

    def wants(self, f: FileRow) -> bool:
        s = self.session
        if s is not None and f.file_id != s.file_id and (f.parent_session, f.project, f.root) != (
                s.session_id, s.project, s.root):  # the session's file, or one of its subagents' files
            return False
        return self.project is None or projects.matches(self.project, f.project)


class Watchers(Sink):
    name = "watch"

    def __init__(self, server: Server, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.server = server
        self.heartbeat_s = heartbeat_s
        self.lock = threading.Lock()
        self.subs: dict[bytes, Subscriber] = {}
        self.next_beat = 0.0
        server.dropped.append(self.dropped)

    def subscribe(self, envelope: Envelope, session: Place | None, project: str | None) -> None:
        what = f"session {session.session_id}" if session else f"project *{project}*" if project else "all sessions"
        with self.lock:
            self.subs[envelope[0]] = Subscriber(envelope, session, project)
        self.server.post(envelope, Watching(what=what, heartbeat_s=self.heartbeat_s))

    def dropped(self, envelope: Envelope, err: int) -> None:
        """The server could not deliver to this peer (main thread)."""
        with self.lock:
            sub = self.subs.get(envelope[0])
            if sub is None:
                return
            if err == errno.EHOSTUNREACH:
                del self.subs[envelope[0]]
                log.info("watch: a subscriber went away (%d left)", len(self.subs))
            else:
                sub.missed += 1

    def ack(self, envelope: Envelope, seq: int) -> None:
        """A subscriber printed the ``Messages`` numbered ``seq`` (main thread)."""
        with self.lock:
            sub = self.subs.get(envelope[0])
            if sub is not None:
                sub.ack(seq)

    def committed(self, batches: Sequence[tuple[FileRow, Batch]]) -> None:
        """After each commit (ingest thread): push each batch's messages to whoever wants them."""
        for f, batch in batches:
            if not self.subs:
                return
            if batch.rows:
                self._push(f, batch)

    def _push(self, f: FileRow, batch: Batch) -> None:
        with self.lock:
            targets = [s for s in self.subs.values() if s.wants(f)]
        if not targets:
            return
        b = Builder(full=False, session_id=f.session_key, project=f.project)
        for row, view in batch.new_lines():
            if view.type in _CONVERSATION:
                try:
                    b.add(view)
                except Exception:  # one line the builder cannot read is left out, not the batch
                    log.exception("watch: cannot show line %d", row.id)
        if not b.entries:
            return
        for e in b.entries:
            e.parent = f.parent_session
            if len(e.text) > TEXT_MAX:
                e.text = one_line(e.text, TEXT_MAX)
        msg = Messages(entries=b.entries)
        size = len(encode(msg))
        for sub in targets:
            with self.lock:
                seq = sub.admit(size)
            if seq is not None:
                msg.seq = seq
                self.server.post_encoded(sub.envelope, encode(msg))

    def tick(self) -> float | None:
        """Heartbeats (main thread, after every wake-up); returns the seconds until the next one."""
        if not self.subs:
            return None
        now = time.monotonic()
        if now >= self.next_beat:
            self.next_beat = now + self.heartbeat_s
            with self.lock:
                subs = list(self.subs.values())
            for s in subs:
                self.server.post(s.envelope, Heartbeat(missed=s.missed))
        return max(0.0, self.next_beat - now)

    def stop(self) -> None:
        """The daemon is stopping: end every subscription cleanly."""
        with self.lock:
            subs, self.subs = list(self.subs.values()), {}
        for s in subs:
            self.server.post(s.envelope, Ok(message="csmd stopped"))

"""Live updates: one watch subscription to csmd, fanned out to each page's event stream (SSE).

The hub holds a single ``Watch`` of every session, so ten open tabs cost csmd one subscriber.
An ``entry`` event says that a session has a new entry (its kind, time and text as csmd's stream
carries them: no tool input or output, text cut); a Session page then fetches its page of entries
again, rendered as a reload renders them, so a live line looks like a reloaded one.
Each event gets the next number; the last ``KEEP`` are kept so a page that reconnects with
``Last-Event-ID`` gets what it missed. A page whose queue overflows, or that asks for events
older than those kept, or whose updates csmd itself dropped (``Heartbeat.missed``), gets a
``dropped`` event: it says so and reloads its data. When csmd is down the hub says so
(``csmd`` event) and subscribes again until it is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from csm.client.transport import asubscribe
from csm.shared.errors import CsmError
from csm.shared.protocol import Heartbeat, Messages, Watch, Watching

log = logging.getLogger("csm.web")

KEEP = 2000
QUEUE = 1000
KEEPALIVE_S = 15.0
RETRY_S = 1.0

Event = tuple[int, str, str]
"""(id, event name, JSON data)."""


class Client:
    def __init__(self, sessions: set[str] | None) -> None:
        self.sessions = sessions
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE)
        self.dropped = False

    def offer(self, event: Event, sessions: tuple[str, ...]) -> None:
        if sessions and self.sessions is not None and self.sessions.isdisjoint(sessions):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True


class Hub:
    def __init__(self) -> None:
        self.seq = 0
        self.recent: deque[tuple[Event, tuple[str, ...]]] = deque(maxlen=KEEP)
        self.clients: set[Client] = set()
        self.up: bool | None = None
        self.task: asyncio.Task[None] | None = None

    def publish(self, name: str, data: Any, sessions: tuple[str, ...] = ()) -> None:
        """``sessions``: the sessions the event is about (a subagent's entry is its parent's too);
        none: every page's."""
        self.seq += 1
        event = (self.seq, name, json.dumps(data, ensure_ascii=False))
        self.recent.append((event, sessions))
        for c in list(self.clients):
            c.offer(event, sessions)

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def _follow(self) -> None:
        """Keep one subscription to csmd; say when it goes and comes back."""
        while True:
            try:
                async for reply in asubscribe(Watch()):
                    if isinstance(reply, Watching):
                        self._set_up(True)
                    elif isinstance(reply, Messages):
                        for e in reply.entries:  # a signal: pages fetch what they show in full
                            self.publish("entry", {"session": e.session_id, "project": e.project, "kind": e.kind,
                                                   "timestamp": e.timestamp, "text": e.text},
                                             tuple(s for s in (e.session_id, e.parent) if s))
                    elif isinstance(reply, Heartbeat) and reply.missed:
                        self.publish("dropped", {"missed": reply.missed})
            except CsmError as e:
                log.info("csmd: %s", e)
            except Exception:  # the hub must outlive any surprise; the next round tries again
                log.exception("the watch subscription failed")
            self._set_up(False)
            await asyncio.sleep(RETRY_S)  # a reconnect pace, not a wait for a condition

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self.publish("csmd", {"up": up})

    async def stream(self, sessions: set[str] | None, last_id: int | None,
                     tick: Callable[[], Any] | None = None, tick_s: float = 1.0) -> AsyncIterator[str]:
        """One page's event stream; ``tick`` (a coroutine) adds an event of its own every ``tick_s``."""
        self.start()
        client = Client(sessions)
        self.clients.add(client)
        try:
            yield "retry: 1000\n\n"
            if last_id is not None:
                oldest = self.recent[0][0][0] if self.recent else self.seq + 1
                if last_id > self.seq or last_id + 1 < oldest:
                    yield _format((self.seq, "dropped", json.dumps({"missed": "unknown"})))
                    return
                for event, scope in list(self.recent):
                    if event[0] > last_id:
                        client.offer(event, scope)
            elif self.up is not None:
                yield _format((self.seq, "csmd", json.dumps({"up": self.up})))
            loop = asyncio.get_running_loop()
            next_tick = loop.time() + tick_s
            while True:
                if client.dropped:
                    yield _format((self.seq, "dropped", json.dumps({"missed": "queue full"})))
                    return
                wait = max(0.0, next_tick - loop.time()) if tick else KEEPALIVE_S
                try:
                    event = await asyncio.wait_for(client.queue.get(), wait)
                except TimeoutError:
                    if tick is None:
                        yield ": keepalive\n\n"
                    else:
                        next_tick = loop.time() + tick_s
                        name, data = await tick()
                        yield f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
                    continue
                yield _format(event)
        finally:
            self.clients.discard(client)


def _format(event: Event) -> str:
    n, name, data = event
    return f"id: {n}\nevent: {name}\ndata: {data}\n\n"

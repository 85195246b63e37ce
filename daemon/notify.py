"""sd_notify without libsystemd: one datagram to ``$NOTIFY_SOCKET`` per message.

systemd runs a ``Type=notify`` service with ``NOTIFY_SOCKET`` set to a unix datagram
socket (a leading ``@`` means the abstract namespace) and, with ``WatchdogSec=``,
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the process meant to ping). The protocol is
newline-separated ``KEY=VALUE`` lines in one datagram and is declared stable. Outside
systemd nothing is set and every call is a no-op, so csmd needs no special mode.

A failed send is logged once and otherwise ignored: a daemon that keeps archiving
is better than one that dies because its supervisor went away.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("csm.notify")


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if addr.startswith("@"):
            self.address = b"\0" + os.fsencode(addr[1:])
        elif addr.startswith("/"):
            self.address = addr
        self.watchdog_interval_s = self._watchdog_interval(env)
        self.warned = False

    def _watchdog_interval(self, env: Mapping[str, str]) -> float | None:
        """Half of ``WATCHDOG_USEC`` (systemd's advice), if the watchdog is on and meant for us."""
        if self.address is None:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return None
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        return usec / 2e6 if usec > 0 else None

    def send(self, *fields: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            if not self.warned:
                self.warned = True
                log.warning("cannot notify the service manager at %r: %s", self.address, e)

    def ready(self) -> None:
        self.send("READY=1")

    def starting_slowly(self, seconds: float, why: str) -> None:
        """Work before ``ready`` that may take long (a migration rewriting the file): give systemd's start
        timeout ``seconds`` more, so a large database is not killed, and restarted, mid-rewrite for ever."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}", f"STATUS={why}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

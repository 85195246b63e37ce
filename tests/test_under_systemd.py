"""csmd as systemd runs it: sd_notify to a real unix datagram socket (READY, WATCHDOG, STOPPING), and log
lines for journald."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from csm.daemon.notify import Notifier
from csmtest import Csmd, csm_json, wait_for


class Listener:
    """The service manager's end of ``$NOTIFY_SOCKET``."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def received(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    path = os.environ["XDG_RUNTIME_DIR"] + "/notify"
    lst = Listener(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield lst
    lst.sock.close()


def test_ready_then_watchdog_pings_then_stopping(listener: Listener, csmd: Csmd, monkeypatch: pytest.MonkeyPatch,
                                                 projects: Path) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    csmd.start(wait=False)
    wait_for(lambda: "READY=1" in listener.received(), what="READY=1")
    assert listener.messages[0] == "READY=1"
    # READY means the socket is bound: csm gets an answer at once.
    assert csm_json("status")["pid"] == csmd.proc.pid  # type: ignore[union-attr]
    wait_for(lambda: listener.received().count("WATCHDOG=1") >= 3, timeout=5, what="three watchdog pings")
    assert csmd.stop() == 0
    assert listener.received()[-1] == "STOPPING=1"
    assert set(listener.messages) == {"READY=1", "WATCHDOG=1", "STOPPING=1"}


def test_abstract_socket_and_no_pings_without_a_watchdog(monkeypatch: pytest.MonkeyPatch, csmd: Csmd,
                                                         projects: Path) -> None:
    name = f"csm-test-{uuid.uuid4().hex}"
    lst = Listener(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        csmd.start()
        wait_for(lambda: "READY=1" in lst.received(), what="READY=1 on an abstract socket")
        csm_json("sync", "--now")  # wakes the main loop: still no ping, the watchdog is off
        assert csmd.stop() == 0
        assert wait_for(lambda: lst.received()[-1:] == ["STOPPING=1"], what="STOPPING=1")
        assert lst.messages == ["READY=1", "STOPPING=1"]
    finally:
        lst.sock.close()


class TestNotifier:
    def test_watchdog_interval_is_half_the_period_and_only_for_this_process(self) -> None:
        env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
        assert Notifier(env).watchdog_interval_s == 15.0
        assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 15.0
        assert Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval_s is None
        assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s is None  # nobody to ping
        assert Notifier({"NOTIFY_SOCKET": "relative"}).address is None
        assert Notifier({**env, "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None

    def test_an_absent_manager_is_logged_once_not_raised(self, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
        n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
        n.ready()
        n.watchdog()
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "cannot notify" in caplog.records[0].getMessage()


def test_under_journald_log_lines_carry_a_priority_and_no_time(csmd: Csmd, monkeypatch: pytest.MonkeyPatch,
                                                               projects: Path) -> None:
    csmd.log_path.touch()
    st = csmd.log_path.stat()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")  # what systemd sets for a journal stream
    csmd.start()
    assert csmd.stop() == 0
    lines = [ln for ln in csmd.log().splitlines() if not ln.startswith("--- start")]
    assert lines[0].startswith("<6>csm.daemon: csmd ") and lines[-1] == "<6>csm.daemon: stopping", lines

"""Long work is visible: the backlog in ``csm status`` and the bar of ``csm sync --now``.

Small batches (``batch_lines`` in config.toml) make a file of a few MB take hundreds of
commits, so the figures can be watched moving inside one file whatever the machine.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from csmtest import Csmd, run_csm, wait_for
from csm.client.transport import request
from csm.shared import paths, protocol
from csm.shared.errors import DaemonNotRunning
from test_watcher import append, configure, count, line

BAR = re.compile(r"\r\[([# ]{30})\] (\d+)/(\d+) files, ")


def big_file(path: Path, lines: int) -> int:
    data = b"".join(line(i, path.stem, pad=200) for i in range(lines))
    append(path, data)
    return len(data)


def run_in_pty(*args: str, timeout: float = 60) -> tuple[str, int]:
    """``csm args`` with stdout and stderr on a pseudo-terminal; what it wrote and its exit status."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "csm.client", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=dict(os.environ), close_fds=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            out += data
        code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return out.decode(errors="replace"), code


def test_first_sync_of_a_large_file_shows_its_backlog_batch_by_batch(csmd: Csmd, projects: Path,
                                                                        tmp_path: Path) -> None:
    """First start on one large file: ``csm status`` figures move inside the file, and a
    ``csm sync --now`` sent while that first sync runs gets its progress, then its reply."""
    configure(tmp_path, "batch_lines = 20\n")
    size = big_file(projects / "p" / "big.jsonl", 6000)
    csmd.start(wait=False)
    wait_for(lambda: paths.socket_path().exists(), timeout=20, what="the control socket")

    progress: list[protocol.Progress] = []
    final: list[protocol.Message] = []
    sync = threading.Thread(target=lambda: final.append(request(protocol.Sync(), timeout_s=30,
                                                                on_progress=progress.append)))
    sync.start()
    samples: list[protocol.StatusReply] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            s = request(protocol.Status(), timeout_s=10)
        except DaemonNotRunning:
            continue  # bound but not yet answering
        assert isinstance(s, protocol.StatusReply)
        samples.append(s)
        if s.last_sync_at is not None:
            break
        time.sleep(0.005)  # sampling the figures as fast as they can move; the deadline bounds the loop
    sync.join(timeout=30)

    working = [s for s in samples if s.backlog is not None and not s.backlog.counting and s.last_sync_at is None]
    assert working, f"no backlog seen in {len(samples)} status samples"
    assert {s.state for s in working} == {"initial sync"}
    for s in working:
        b = s.backlog
        assert b is not None and (b.files_total, b.bytes_total) == (1, size)
        assert 0 <= b.bytes_done <= size and b.files_done <= 1
    inside = sorted({s.backlog.bytes_done for s in working if s.backlog and s.backlog.files_done == 0})
    assert len([n for n in inside if 0 < n < size]) >= 2, f"bytes done did not move inside the file: {inside}"
    done = [s.backlog.bytes_done for s in working if s.backlog]
    assert done == sorted(done), "bytes done went backwards"
    assert any(s.backlog and s.backlog.rate_bps > 0 and s.backlog.eta_s is not None for s in working)
    # The sync sent meanwhile rescans once more right after (a sample may catch its start): then all is done.
    last = wait_for(lambda: (s := request(protocol.Status(), timeout_s=10)).backlog is None and s, 10, "the end")
    assert isinstance(last, protocol.StatusReply) and last.state == "watching" and last.last_sync_at is not None

    assert final and isinstance(final[0], protocol.SyncReply), final
    assert progress, "a sync waiting behind the first sync got none of its progress"
    assert {p.backlog.bytes_total for p in progress if not p.backlog.counting} == {size}
    assert count() == 6000


def test_sync_now_draws_a_bar_on_a_terminal_only(csmd: Csmd, projects: Path, tmp_path: Path) -> None:
    configure(tmp_path, "batch_lines = 20\npoll_interval_s = 3600\n")
    csmd.args = ["--no-watch"]  # the files below wait for 'csm sync --now'
    csmd.start()

    big_file(projects / "p" / "tty.jsonl", 3000)
    out, code = run_in_pty("sync", "--now")
    assert code == 0, out
    frames = BAR.findall(out)
    assert frames, f"no progress bar on a terminal: {out!r}"
    assert all(total == "1" for _, _, total in frames)
    assert "scanned 1 files (1 changed), ingested 3000 lines" in out
    assert out.rstrip().endswith("s"), "the bar is cleared before the summary"

    big_file(projects / "p" / "pipe.jsonl", 3000)
    r = run_csm("sync", "--now")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("scanned 2 files (1 changed), ingested 3000 lines") and "\r" not in r.stdout

    big_file(projects / "p" / "json.jsonl", 3000)
    out, code = run_in_pty("sync", "--now", "--json")
    assert code == 0 and not BAR.search(out) and "\r[" not in out, out
    assert json.loads(out.replace("\r\n", "\n"))["lines_ingested"] == 3000
    assert count() == 9000

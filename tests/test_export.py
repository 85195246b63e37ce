"""Lossless: ``csm export --raw`` gives back every transcript's complete lines byte for byte."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from csm.client.export import receive
from csmtest import REAL, SHARED_REAL, Csmd, db_rows, run_csm, sync_now, wait_for

SHARED = next((p for p in (SHARED_REAL, Path("/work/shared/fixtures/real")) if p.is_dir()), None)


def complete(path: Path) -> bytes:
    """What csm can have stored of a file: everything up to its last newline."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def export(target: str) -> bytes:
    out = io.BytesIO()
    receive(target, "jsonl", out)
    return out.getvalue()


def check_every_file(root: Path, db: Path) -> int:
    """Each file without bad lines exports byte for byte; one with bad lines exports all its other lines."""
    files = sorted(root.rglob("*.jsonl"))
    assert files
    for f in files:
        got = export(str(f))
        errors = db_rows(db, "SELECT count(*) FROM sync_errors WHERE file_path = ?", str(f))[0][0]
        if errors == 0:
            assert got == complete(f), f
        else:
            lines = complete(f).split(b"\n")[:-1]
            assert got.count(b"\n") + errors == len(lines), f
            assert set(got.split(b"\n")[:-1]) <= set(lines), f
    return len(files)


def test_real_fixtures_export_byte_for_byte(tmp_path: Path, db: Path) -> None:
    d = Csmd(tmp_path, ["--root", str(REAL)]).start()
    try:
        assert check_every_file(REAL, db) == 16
        partial = REAL / "handmade" / "edge_cases.jsonl"
        assert not partial.read_bytes().endswith(b"\n"), "this fixture's last line has no newline"
    finally:
        assert d.stop() == 0


def test_shared_fixtures_export_byte_for_byte(tmp_path: Path, db: Path) -> None:
    if SHARED is None:
        pytest.skip("no shared/fixtures/real beside the repository (CI has none): only tests/fixtures/real checked")
    d = Csmd(tmp_path, ["--root", str(SHARED)])
    try:
        d.start(wait=False)
        d.wait_ready(90)  # ~30 MB to ingest first: slow on a loaded machine
        assert check_every_file(SHARED, db) > 100
    finally:
        if d.alive:
            assert d.stop() == 0


class TestExportCommand:
    def test_session_prefix_file_path_output_file_and_deleted_source(self, csmd: Csmd, projects: Path,
                                                                     tmp_path: Path) -> None:
        d = projects / "p"
        d.mkdir()
        big = d / "aaaa1111-big.jsonl"
        line = json.dumps({"type": "user", "sessionId": "aaaa1111-big", "message": {"content": "z" * 5000}})
        big.write_text("".join(line.replace("zzz", f"{i:05d}", 1) + "\n" for i in range(700)))  # ~3.5 MB
        small = d / "aaaa2222-small.jsonl"
        small.write_text(line[:100].replace("zzz", "q") + "\n" + '{"type":"summary","summary":"s"}\n')
        csmd.start()
        r = run_csm("export", "--raw", "aaaa1")
        assert r.returncode == 0 and r.stdout.encode() == big.read_bytes(), "several 1 MB chunks, in order"
        out = tmp_path / "copy.jsonl"
        r = run_csm("export", "--format", "jsonl", str(small), "-o", str(out))
        assert r.returncode == 0 and out.read_bytes() == b'{"type":"summary","summary":"s"}\n'
        assert "1 lines" in r.stderr  # the first line was cut at 100 bytes: not JSON, a bad line

        ambiguous = run_csm("export", "--raw", "aaaa")
        assert ambiguous.returncode == 4 and "aaaa1111-big" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
        missing = run_csm("export", "--raw", "nope", "-o", str(tmp_path / "never.jsonl"))
        assert missing.returncode == 5 and missing.stderr.count("\n") == 1
        assert not (tmp_path / "never.jsonl").exists() and list(tmp_path.glob(".never*")) == []

        expected = big.read_bytes()
        big.unlink()  # Claude Code's cleanup deleted it: the archive still has it
        wait_for(lambda: db_rows(csmd.tmp / "data" / "csm" / "csm.db",
                                 "SELECT gone_at FROM sync_metadata WHERE session_key = 'aaaa1111-big'")[0][0],
                 what="the deletion to be seen")
        sync_now()
        assert export("aaaa1111-big") == expected
        assert export(str(big)) == expected


def test_raw_export_to_a_pipe_survives_stop_and_continue(csmd: Csmd, projects: Path) -> None:
    """Ctrl-Z / fg while ``csm export --raw`` is blocked on a full pipe, with unbuffered stdout.

    A stop signal makes a blocked pipe ``write`` return short; a write that is not repeated
    drops the rest of the chunk and splices two lines, with exit status 0. Whatever happens,
    the output is the file byte for byte, or the exit status says it is not.
    """
    f = projects / "p" / "stopme.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(json.dumps({"type": "user", "sessionId": "stopme", "n": i, "pad": "p" * 3000}).encode()
                           + b"\n" for i in range(4000)))  # ~12 MB: a dozen 1 MB chunks
    csmd.start()
    client = subprocess.Popen([sys.executable, "-m", "csm.client", "export", "--raw", "stopme"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    got = bytearray()

    def read_slowly() -> None:
        assert client.stdout is not None
        while piece := client.stdout.read1(8192):  # small reads: the client's 1 MB writes block often
            got.extend(piece)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    stops = 0
    while client.poll() is None:  # the stimulus: stop and continue the client as fast as a user could not
        client.send_signal(signal.SIGSTOP)
        time.sleep(0.001)
        client.send_signal(signal.SIGCONT)
        stops += 1
        time.sleep(0.003)
    reader.join(30)
    assert stops > 10, "the client was stopped while it wrote"
    assert client.returncode == 0, client.stderr.read() if client.stderr else ""
    assert bytes(got) == f.read_bytes()

"""Hostile input against a real csmd: protocol garbage, junk in live transcripts, odd paths."""

from __future__ import annotations

import itertools
import json
import os
import random
import stat
import sys
import threading
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csm.shared import protocol
from csmtest import Csmd, csm_json, db_rows, raw_client, run_csm, wait_for
from lines import append, line


def rss_kb(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    raise AssertionError("no VmRSS")


def hwm_kb(pid: int) -> int:
    """Peak RSS since the process started."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1])
    raise AssertionError("no VmHWM")


# --- protocol ---------------------------------------------------------------------------


def garbage(rng: random.Random) -> list[bytes]:
    """One malformed request: the frames a hostile or broken client might send."""
    enc = msgspec.msgpack.encode
    valid = protocol.encode(protocol.Query(sql="SELECT 1", params=[1, "x"]))
    kind = rng.randrange(9)
    if kind == 0:
        return [rng.randbytes(rng.randrange(300))]
    if kind == 1:  # well-formed msgpack of the wrong shape
        return [enc(rng.choice([0, -1, 2**63, "Status", [1, 2], {"x": 1}, None, 1.5, b"\x00", [{"type": "Status"}]]))]
    if kind == 2:  # the right envelope, wrong tags or field types
        return [enc(rng.choice([
            {"type": "Nope"}, {"type": 5}, {"type": None}, {"type": ""}, {"type": "Query"},
            {"type": "Query", "sql": 5}, {"type": "Query", "sql": "SELECT 1", "params": "x"},
            {"type": "Query", "sql": "SELECT 1", "max_rows": "many"}, {"type": "Sync", "wait": "yes"},
            {"type": "Status", "type2": []}, {"type": "Rows", "columns": [], "rows": []},
        ]))]
    if kind == 3:  # truncated
        return [valid[: rng.randrange(len(valid))]]
    if kind == 4:
        return [b""]
    if kind == 5:  # many frames at once
        return [rng.randbytes(rng.randrange(20)) for _ in range(rng.randrange(2, 12))]
    if kind == 6:  # headers that announce huge sizes
        return [rng.choice([b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                            b"\xc6\xff\xff\xff\xff", b"\x81\xa4type\xdb\x7f\xff\xff\xff"])]
    if kind == 7:  # deep nesting
        return [b"\x91" * rng.randrange(1000, 200_000)]
    return [valid[:-1] + rng.randbytes(1)]  # one byte changed at the end


class TestProtocolFuzz:
    def test_ten_thousand_malformed_requests(self, csmd: Csmd) -> None:
        csmd.start()
        assert csmd.proc is not None
        pid = csmd.proc.pid
        rng = random.Random(7)
        replies: list[protocol.Reply] = []

        with raw_client() as s:

            def burst(n: int) -> None:
                """Send n requests (each one message, maybe many frames), then read n replies."""
                for _ in range(n):
                    s.send_multipart(garbage(rng))
                for _ in range(n):
                    assert s.poll(10_000), f"no reply after {len(replies)} replies"
                    replies.append(protocol.decode_reply(s.recv_multipart()[-1]))

            burst(1000)  # warm-up: let allocators and caches settle before measuring
            before = rss_kb(pid)
            for _ in range(18):
                burst(500)
            after = rss_kb(pid)
        assert len(replies) == 10_000, "each malformed request gets exactly one reply"
        kinds = {(type(r).__name__, getattr(r, "code", None)) for r in replies}
        # bad_request; or, for the few that decode (a Status with an unknown field, a Query
        # whose SQL does not take the mutated parameters), their ordinary answer
        assert kinds <= {("Error", "bad_request"), ("Error", "query"), ("StatusReply", None)}, kinds
        assert ("Error", "bad_request") in kinds
        assert after - before < 4 * 1024, f"RSS grew from {before} kB to {after} kB"
        status = csm_json("status")
        assert status["pid"] == pid
        assert "Traceback" not in csmd.log()

    def test_an_oversize_request_is_dropped_without_harm(self, csmd: Csmd) -> None:
        csmd.start()
        assert csmd.proc is not None
        before = rss_kb(csmd.proc.pid)
        big = b"\xc6" + (8 << 20).to_bytes(4, "big") + bytes(8 << 20)  # an 8 MiB msgpack bin
        assert len(big) > protocol.MAX_REQUEST_BYTES
        for _ in range(3):
            with raw_client() as s:
                s.send(big)
                assert not s.poll(500), "an oversize request gets no reply: its connection is dropped"
        assert csm_json("status")["pid"] == csmd.proc.pid
        assert rss_kb(csmd.proc.pid) - before < 8 * 1024, "the big frames were not kept"


# --- transcripts ------------------------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def is_json_object(raw: bytes) -> bool:
    """The reference: a line is good iff it is UTF-8 and standard JSON (no NaN) for an object, at any depth."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(raw) + 1000))  # deep nesting is valid JSON (issue 10 item 14)
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:
        return False
    finally:
        sys.setrecursionlimit(limit)
    return isinstance(value, dict)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ODD_LINES = [
    b'{"type":"user","sessionId":"\\ud83d","message":{"role":"user","content":"cut \\ud83d"}}\n',  # lone surrogate
    b'{"type":"assistant","message":{"usage":{"input_tokens":1e400}}}\n',  # beyond a double
    b'\xef\xbb\xbf{"type":"user"}\n',  # a BOM
    b'{"type":"user"}\r\n', b"\x00" * 40 + b"\n", b"[" * 3000 + b"]" * 3000 + b"\n", b"\n", b"   \n",
    b'{"uuid": 5, "sessionId": ["x"], "timestamp": {}, "message": "text"}\n', b'{"a": NaN}\n',
    b'{"a": "\xff\xfe"}\n', b'{"type": "user"', b'"just a string"\n', b"1234\n", b"null\n",
    b'{"message":' + b"[" * 3000 + b"]" * 3000 + b"}\n", b'{"x":' + b"[" * 3000 + b"]" * 3000 + b"}\n",  # deep, valid
    b'{"type":"user","message":{"content":' + b"[" * 500 + b"]" * 500 + b"}}\n",  # deep, yet within limits
]
odd_lines = st.sampled_from(ODD_LINES)
junk = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode() + b"\n"),
    st.dictionaries(st.sampled_from(["type", "uuid", "sessionId", "timestamp", "message", "cwd"]), json_values,
                    max_size=5).map(lambda v: json.dumps(v, ensure_ascii=False).encode() + b"\n"),
    odd_lines,
)


class TestJunkInLiveTranscripts:
    def test_random_bytes_and_json_never_crash_or_stall(self, csmd: Csmd, projects: Path, db: Path) -> None:
        files = [projects / "p" / f"live{i}.jsonl" for i in range(3)]
        for f in files:
            append(f, line(0, f.stem))
        csmd.start()
        markers = itertools.count(1)

        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(chunks=st.lists(junk, min_size=1, max_size=6), which=st.integers(0, len(files) - 1))
        def example(chunks: list[bytes], which: int) -> None:
            f = files[which]
            for chunk in chunks:
                append(f, chunk)
            if not f.read_bytes().endswith(b"\n"):
                append(f, b"\n")
            n = next(markers)
            append(f, line(n, f.stem, uuid=f"marker-{n}"))
            wait_for(lambda: db_rows(db, "SELECT count(*) FROM events WHERE uuid = ?", f"marker-{n}")[0][0] == 1,
                     10, f"marker {n} after the junk")
            complete = f.read_bytes().split(b"\n")[:-1]
            bad = sum(not is_json_object(x) for x in complete)
            # A record after NUL bytes is kept (the NULs are the bad line): one row and one error.
            salvaged = sum(not is_json_object(x) and b"\0" in x and is_json_object(x[x.rfind(b"\0") + 1:])
                           for x in complete)
            rows = db_rows(db, "SELECT count(*) FROM events JOIN sync_metadata USING (file_id) WHERE file_path = ?",
                           str(f))[0][0]
            errors = db_rows(db, "SELECT count(*) FROM sync_errors WHERE file_path = ?", str(f))[0][0]
            assert (rows, errors) == (len(complete) - bad + salvaged, bad)

        example()
        assert csmd.alive
        assert "Traceback" not in csmd.log()
        s = csm_json("status")
        assert s["errors"] == db_rows(db, "SELECT count(*) FROM sync_errors")[0][0]

    def test_each_odd_line_is_a_row_or_a_bad_line(self, csmd: Csmd, projects: Path, db: Path) -> None:
        f = projects / "p" / "odd.jsonl"
        csmd.start()
        for chunk in ODD_LINES:  # one write each, so csmd also sees partial lines grow
            append(f, chunk)
        append(f, b"\n" + line(1, "odd", uuid="marker"))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events WHERE uuid = 'marker'")[0][0] == 1, 10, "marker")
        complete = f.read_bytes().split(b"\n")[:-1]
        bad = sum(not is_json_object(x) for x in complete)
        assert db_rows(db, "SELECT count(*) FROM events") == [(len(complete) - bad,)]
        assert db_rows(db, "SELECT count(*) FROM sync_errors") == [(bad,)]
        assert "Traceback" not in csmd.log()

    def test_a_line_cut_inside_an_emoji_is_kept(self, csmd: Csmd, projects: Path, db: Path) -> None:
        """JSON.stringify writes a lone surrogate as an escape: valid JSON, so the line is stored."""
        f = projects / "p" / "s.jsonl"
        cut = b'{"type":"user","uuid":"u1","sessionId":"s","message":{"role":"user","content":"ok \\ud83d"}}\n'
        append(f, cut)
        csmd.start()
        assert db_rows(db, "SELECT raw FROM events") == [(cut[:-1].decode(),)]
        assert db_rows(db, "SELECT count(*) FROM sync_errors") == [(0,)]


class TestHugeLines:
    def test_a_line_over_the_limit_is_a_bad_line_and_never_held_in_memory(self, csmd: Csmd, projects: Path,
                                                                          tmp_path: Path, db: Path) -> None:
        cfg = tmp_path / "config" / "csm" / "config.toml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text("max_line_bytes = 1048576\n")
        f = projects / "p" / "s.jsonl"
        append(f, line(0))
        csmd.start()
        assert csmd.proc is not None
        peak_before = hwm_kb(csmd.proc.pid)
        big = 40 << 20
        append(f, b'{"type":"user","pad":"' + b"a" * big + b'"}\n' + line(1) + b"b" * (3 << 20))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events")[0][0] == 2, 20, "the line after the big one")
        errors = db_rows(db, "SELECT line_offset, length, error FROM sync_errors")
        assert len(errors) == 1 and errors[0][1] == big + len('{"type":"user","pad":""}'), errors
        assert "max_line_bytes" in errors[0][2]
        offset = db_rows(db, "SELECT last_position FROM sync_metadata")[0][0]
        assert offset == f.stat().st_size - (3 << 20), "the unfinished long line waits for its newline"
        append(f, b"\n" + line(2))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events")[0][0] == 3, 20, "the line after the second")
        assert db_rows(db, "SELECT count(*) FROM sync_errors") == [(2,)]
        assert hwm_kb(csmd.proc.pid) - peak_before < 16 * 1024, "a 40 MB line was read into memory"


# --- paths ------------------------------------------------------------------------------


class TestOddPaths:
    def test_links_fifos_devices_empty_files_and_folders_named_jsonl(self, csmd: Csmd, projects: Path,
                                                                      tmp_path: Path, db: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        secret = outside / "secret.jsonl"
        append(secret, line(0, "secret", uuid="secret-0"))
        p = projects / "p"
        p.mkdir()
        (p / "loop-a.jsonl").symlink_to(p / "loop-b.jsonl")
        (p / "loop-b.jsonl").symlink_to(p / "loop-a.jsonl")
        (p / "self.jsonl").symlink_to(p / "self.jsonl")
        (p / "out.jsonl").symlink_to(secret)
        (projects / "escape").symlink_to(outside, target_is_directory=True)
        (projects / "up").symlink_to(projects, target_is_directory=True)  # a folder loop
        os.mkfifo(p / "fifo.jsonl")
        devices = []
        try:
            os.mknod(p / "zero.jsonl", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: endless
            devices.append("zero.jsonl")
        except PermissionError:
            pass
        (p / "empty.jsonl").touch()
        (p / "dir.jsonl").mkdir()
        append(p / "dir.jsonl" / "inner.jsonl", line(0, "inner", uuid="inner-0"))
        good = p / "good.jsonl"
        append(good, line(0, "good", uuid="good-0"))

        csmd.start()
        out = run_csm("sync", "--now", "--json", timeout=30)
        assert out.returncode == 0, out.stderr
        # Created and written while csmd watches: the watcher's hints must not follow them either.
        (p / "late-out.jsonl").symlink_to(secret)
        os.mkfifo(p / "late-fifo.jsonl")
        append(secret, line(1, "secret", uuid="secret-1"))
        append(outside / "new.jsonl", line(0, "secret", uuid="secret-2"))
        append(good, line(1, "good", uuid="good-1"))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events WHERE uuid = 'good-1'")[0][0] == 1,
                 10, "a line appended next to the odd paths")
        assert run_csm("sync", "--now", timeout=30).returncode == 0

        uuids = sorted(r[0] for r in db_rows(db, "SELECT uuid FROM events"))
        assert uuids == ["good-0", "good-1", "inner-0"]
        tracked = {Path(r[0]).name for r in db_rows(db, "SELECT file_path FROM sync_metadata")}
        assert tracked <= {"good.jsonl", "inner.jsonl", "empty.jsonl"}, tracked
        assert not any(str(outside) in r[0] for r in db_rows(db, "SELECT file_path FROM sync_metadata"))
        assert "Traceback" not in csmd.log()
        assert csm_json("status")["pid"] == csmd.proc.pid  # type: ignore[union-attr]

    def test_a_file_name_that_is_not_utf8_is_skipped(self, csmd: Csmd, projects: Path, db: Path) -> None:
        p = projects / "p"
        p.mkdir()
        odd = os.fsencode(p) + b"/caf\xe9.jsonl"  # Latin-1, as an old tool might name it
        with open(odd, "wb") as fh:
            fh.write(line(0, "odd"))
        csmd.start()
        append(p / "s.jsonl", line(0, "s"))
        wait_for(lambda: db_rows(db, "SELECT count(*) FROM events WHERE session_id = 's'")[0][0] == 1, 10, "s")
        assert db_rows(db, "SELECT count(*) FROM events") == [(1,)]
        assert csmd.log().count("is not valid UTF-8") == 1
        assert csm_json("status").get("last_error") is None

    def test_a_fifo_being_written_never_blocks_ingestion(self, csmd: Csmd, projects: Path, db: Path) -> None:
        p = projects / "p"
        p.mkdir()
        fifo = p / "pipe.jsonl"
        os.mkfifo(fifo)
        csmd.start()
        # A writer that keeps the FIFO open: a blocking open or read in csmd would hang here.
        stop = threading.Event()

        def writer() -> None:
            fd = os.open(fifo, os.O_RDWR)
            try:
                while not stop.wait(0.01):
                    try:
                        os.write(fd, line(0, "pipe"))
                    except BlockingIOError:
                        pass
            finally:
                os.close(fd)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        try:
            append(p / "s.jsonl", line(0, "s"))
            wait_for(lambda: db_rows(db, "SELECT count(*) FROM events")[0][0] == 1, 10, "the regular file")
            assert run_csm("sync", "--now", timeout=30).returncode == 0
        finally:
            stop.set()
            t.join()
        assert db_rows(db, "SELECT count(*) FROM events WHERE session_id = 'pipe'") == [(0,)]

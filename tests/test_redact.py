"""``csm export --redact`` (issue 15): every pattern README lists is replaced in all three formats, raw
lines stay valid JSON, and real transcripts' ordinary text is left alone."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csm.client.export import RedactedLines, receive
from csm.client.redact import PATTERNS, Redactor
from csmtest import REAL, Csmd, run_csm
from test_export import complete

FALSE_POSITIVES = 0
"""Secrets found in tests/fixtures/real (1.2 MB of real transcripts), none of them real (README says so)."""

# The part of each pattern's example that must be gone (the name in ``password=`` stays).
SECRETS = {
    "private-key": "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
    "anthropic-key": "Xq3vB7nT2mK9pL4sR8wZ1cF6hJ0dG5yU",
    "openai-key": "4fT9qL2mX7vB1nK8pR3sW6zC0hJ5dG",
    "github-token": "1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R",
    "aws-access-key-id": "AKIAIOSFODNN7EXAMPLE",
    "aws-secret-key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "slack-token": "2048-4096-Zq8rT3mV9kL2pN7s",
    "bearer": "eyJhbGciOiJIUzI1NiJ9",
    "url-password": "s3cretPassw0rd",
    "password": "hunter2hunter2",
}


def folder(path: str) -> str:
    """Claude Code's project folder name for ``path``."""
    return re.sub(r"[^A-Za-z0-9]", "-", path)


def session_lines(home: str) -> list[bytes]:
    """A session whose prompt, tool call (a JSON object with a ``"password"`` key) and tool output hold
    every example, and the home path in prose, in ``cwd`` and in Claude Code's folder-name form."""
    examples = "\n".join(p.example for p in PATTERNS)
    base = {"sessionId": "red1", "cwd": f"{home}/proj", "timestamp": "2026-11-01T10:00:00.000Z"}
    records = [
        {**base, "type": "user", "uuid": "u0", "parentUuid": None,
         "message": {"role": "user", "content": f"keys:\n{examples}\nin {home}/proj and /Users/alice/x"}},
        {**base, "type": "assistant", "uuid": "a1", "parentUuid": "u0",
         "message": {"id": "m1", "role": "assistant", "model": "claude-x", "content": [
             {"type": "text", "text": "Saving it."},
             {"type": "tool_use", "id": "t1", "name": "Bash",
              "input": {"command": f"cat {home}/.claude/projects/{folder(home)}-proj/x",
                        "password": "hunter2hunter2"}}]}},
        {**base, "type": "user", "uuid": "u2", "parentUuid": "a1",
         "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": examples}]}},
    ]
    return [json.dumps(r, separators=(",", ":")).encode() for r in records]


@pytest.fixture
def session(csmd: Csmd, projects: Path) -> Path:
    f = projects / "p" / "red1.jsonl"
    f.parent.mkdir()
    f.write_bytes(b"".join(x + b"\n" for x in session_lines(os.environ["HOME"])))
    csmd.start()
    return f


@pytest.mark.parametrize("fmt", ["jsonl", "markdown", "html"])
def test_every_pattern_is_redacted_in_every_format(session: Path, fmt: str) -> None:
    plain = run_csm("export", "red1", "--format", fmt)
    r = run_csm("export", "red1", "--format", fmt, "--redact")
    assert plain.returncode == 0 and r.returncode == 0, (plain.stderr, r.stderr)
    home = os.environ["HOME"]
    for kind, secret in SECRETS.items():
        assert secret in plain.stdout, f"the unredacted export shows the {kind} example"
        assert secret not in r.stdout, f"{kind} left in the {fmt} export"
        assert f"[REDACTED:{kind}]" in r.stdout, kind
    assert home in plain.stdout and home not in r.stdout and "/Users/alice" not in r.stdout
    assert "~/proj" in r.stdout
    assert folder(home) not in r.stdout, "the home path in a project folder's name"
    assert re.search(r"redacted \d+ \(.*home \d+", r.stderr), r.stderr
    if fmt == "jsonl":
        lines = r.stdout.encode().split(b"\n")
        assert lines[-1] == b"" and len(lines) - 1 == len(session.read_bytes().split(b"\n")) - 1
        records = [json.loads(x) for x in lines[:-1]]  # each line still valid JSON
        assert records[1]["message"]["content"][1]["input"]["password"] == "[REDACTED:password]"
        assert records[0]["uuid"] == "u0" and records[2]["type"] == "user", "the rest of each line as it was"


def test_real_transcripts_lose_nothing_but_home_paths(tmp_path: Path) -> None:
    """The raw export of every real fixture, redacted as ``csm export --raw --redact`` does it (in-process:
    16 CLI starts would cost 10 s): each line valid JSON with the same keys, and no secret found beyond
    ``FALSE_POSITIVES`` (the home paths are real ones: /Users/dain, /home/marco…)."""
    d = Csmd(tmp_path, ["--root", str(REAL)]).start()
    try:
        redactor = Redactor()
        for f in sorted(REAL.rglob("*.jsonl")):
            out = io.BytesIO()
            lines = RedactedLines(out, redactor)
            receive(str(f), "jsonl", lines)
            lines.close()
            got = out.getvalue().split(b"\n")
            assert got.pop() == b""
            stored = [json.loads(x) for x in complete(f).split(b"\n")[:-1] if _object(x)]
            assert [set(json.loads(x)) for x in got] == [set(x) for x in stored], f
        found = dict(redactor.counts)
        assert found.pop("home") > 1000
        assert sum(found.values()) <= FALSE_POSITIVES, found
    finally:
        assert d.stop() == 0


def _object(x: bytes) -> bool:
    """A line csm stores (bad lines are not exported)."""
    try:
        return isinstance(json.loads(x), dict)
    except ValueError:
        return False


SOME_TEXT = st.one_of(st.text(max_size=30), st.sampled_from([p.example for p in PATTERNS] + [
    "/home/bob/x", "C:\\Users\\bob\\x", "-Users-bob-src", "password", "token", "\ud800", "a\nb\"c\\d"]))
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | SOME_TEXT, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SOME_TEXT, inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(obj=st.dictionaries(SOME_TEXT, JSON, max_size=5), ascii_only=st.booleans())
def test_a_redacted_line_is_the_redacted_record_and_valid_json(obj: dict[str, object], ascii_only: bool) -> None:
    """Redacting a raw line inside its string tokens gives the same record as redacting the decoded one,
    however it is escaped; a line with nothing to redact keeps its bytes."""
    line = json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if not ascii_only and b"\xed" in line:
        return  # a lone surrogate cannot be UTF-8: Claude Code writes it as \ud800, never raw
    expected = Redactor(home="/home/me").value(obj)
    got = Redactor(home="/home/me").jsonl(line)
    assert json.loads(got) == expected
    if expected == obj:
        assert got == line


@settings(max_examples=100, deadline=None)
@given(records=st.lists(st.dictionaries(SOME_TEXT, SOME_TEXT, max_size=3), min_size=1, max_size=4),
       newline_last=st.booleans(), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_lines_redact_the_same_however_the_chunks_cut_them(records: list[dict[str, str]], newline_last: bool,
                                                          cuts: list[int]) -> None:
    """csmd cuts chunks anywhere, even inside a line (and a final line may have no newline)."""
    lines = [json.dumps(r).encode() for r in records]
    data = b"\n".join(lines) + (b"\n" if newline_last else b"")
    out = io.BytesIO()
    w = RedactedLines(out, Redactor(home="/home/me"))
    at = 0
    for cut in sorted({min(c, len(data)) for c in cuts}) + [len(data)]:
        w.write(data[at:cut])
        at = cut
    w.close()
    r = Redactor(home="/home/me")
    assert out.getvalue() == b"\n".join(r.jsonl(x) for x in lines) + (b"\n" if newline_last else b"")

"""Every valid JSON object line is stored, raw and byte for byte, and nothing a line holds stops the rest.

A line is stored as soon as it is a JSON object; what csm derives from it (usage, search text, session
figures, titles) may fail for that one line, and then the failure is recorded against the line
(``csm query errors``, ``csm status``) while the line, the other lines and the other files go on.
The property test writes lines shaped like Claude Code's records, with hostile values in exactly the
fields the sinks read, into one csmd.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csmtest import Csmd, csm_json, current_raws, db_rows, run_csm, status, sync_now, wait_for
from test_browse import Watch
from lines import append, line, record, response

TS = "2026-11-01T10:00:00.000Z"


def assistant(msg_id: str, usage: dict[str, Any], session: str = "s", **extra: Any) -> bytes:
    return record(response(f"a-{msg_id}", session, TS, {"id": msg_id, "model": "claude-sonnet-4-5",
                                                        "content": [{"type": "text", "text": "hi"}], "usage": usage},
                           f"r-{msg_id}", **extra))


def stored_exactly(db: Path, f: Path, lines: list[bytes]) -> None:
    assert current_raws(db, f) == [x.decode() for x in lines]
    assert db_rows(db, "SELECT count(*) FROM sync_errors WHERE file_path = ?", str(f)) == [(0,)]


class TestOneLineStopsNothing:
    def test_a_lone_surrogate_in_a_progress_message_is_stored_and_stops_no_file(self, csmd: Csmd, projects: Path,
                                                                                db: Path) -> None:
        """Issue 10 item 1: ``data.message`` holding ``"\\ud83d"`` (JSON.stringify of a string cut inside an
        emoji) broke the batch and left the search sink's rows behind for the next file's commit."""
        f = projects / "p" / "hostile.jsonl"
        cut = (b'{"type":"progress","uuid":"p1","sessionId":"hostile","timestamp":"2026-11-01T10:00:01.000Z",'
               b'"data":{"type":"agent_progress","message":{"type":"assistant","timestamp":"2026-11-01T10:00:01.000Z",'
               b'"requestId":"r1","message":{"id":"m1","model":"claude-sonnet-4-5","role":"assistant",'
               b'"content":[{"type":"text","text":"cut \\ud83d"}],"usage":{"input_tokens":7,"output_tokens":3}}}}}')
        lines = [line(0, "hostile").rstrip(b"\n"), cut, line(2, "hostile").rstrip(b"\n")]
        append(f, b"".join(x + b"\n" for x in lines))
        csmd.start()
        other = projects / "p" / "other.jsonl"
        append(other, line(0, "other") + line(1, "other"))
        wait_for(lambda: len(current_raws(db, other)) == 2, 10, "the other file, after the hostile one")
        stored_exactly(db, f, lines)
        append(f, line(3, "hostile"))
        wait_for(lambda: len(current_raws(db, f)) == 4, 10, "a later append to the hostile file")
        # What can be derived is: the embedded response's usage, the prompts' search text.
        assert db_rows(db, "SELECT input_tokens, output_tokens FROM usage") == [(7, 3)]
        assert db_rows(db, "SELECT count(*) FROM message_text") == [(5,)]
        assert status()["last_error"] is None
        assert "Traceback" not in csmd.log()


class TestOutOfRangeNumbers:
    def test_usage_figures_sqlite_cannot_hold_are_errors_of_their_lines_only(self, csmd: Csmd, projects: Path,
                                                                          db: Path) -> None:
        """Issue 10 item 2: such figures raised OverflowError in the usage sink and the file never moved on."""
        f = projects / "p" / "big.jsonl"
        lines = [
            assistant("m-max", {"input_tokens": 18446744073709551615, "output_tokens": 1}),
            assistant("m-half1", {"input_tokens": 2**62, "output_tokens": 2**62}),  # their sum overflows
            assistant("m-half2", {"input_tokens": 2**62, "cache_read_input_tokens": 2**62}),
            assistant("m-low", {"input_tokens": -(2**63) - 1, "output_tokens": 1}),
            assistant("m-huge", {"input_tokens": 10**40, "output_tokens": 1}),
            assistant("m-ok", {"input_tokens": 100, "output_tokens": 20}),
        ]
        append(f, b"".join(x + b"\n" for x in lines))
        csmd.start()
        other = projects / "p" / "other.jsonl"
        append(other, line(0, "other"))
        wait_for(lambda: len(current_raws(db, other)) == 1, 10, "the other file")
        stored_exactly(db, f, lines)
        assert db_rows(db, "SELECT message_id, input_tokens, output_tokens FROM usage") == [("m-ok", 100, 20)]
        assert db_rows(db, "SELECT sum(input_tokens), sum(output_tokens) FROM session_usage") == [(100, 20)]
        # Each refused usage is an error of its line, listed and counted; the line itself is stored.
        errors = csm_json("query", "errors")
        assert sorted(e["offset"] for e in errors) == [sum(len(x) + 1 for x in lines[:i]) for i in range(5)]
        assert all(e["file"] == str(f) and e["error"].startswith("usage:") and "stored" in e["error"]
                   for e in errors), errors
        s = status()
        assert (s["errors"], s["line_errors"]) == (0, 5)
        out = run_csm("status")
        assert "5 stored lines" in out.stdout, out.stdout
        append(f, assistant("m-later", {"input_tokens": 1, "output_tokens": 1}) + b"\n")
        wait_for(lambda: len(current_raws(db, f)) == 7, 10, "a later line of the same file")
        assert "Traceback" not in csmd.log()


class TestDeepNesting:
    def test_a_valid_object_nested_990_levels_deep_is_stored(self, csmd: Csmd, projects: Path, db: Path) -> None:
        """Issue 10 item 14: the decoder's recursion limit (about 1000 levels, less what the ingest thread's
        own calls use) made such lines bad lines. Any depth is valid JSON; the shallow fields are still read."""
        f = projects / "p" / "deep.jsonl"
        lines = [
            b'{"type":"user","uuid":"d1","sessionId":"deep","x":' + b"[" * 990 + b"]" * 990 + b"}",
            b'{"type":"user","uuid":"d2","sessionId":"deep","message":{"role":"user","content":"deep prompt",'
            b'"extra":' + b'{"a":' * 990 + b"1" + b"}" * 990 + b"}}",
            b'{"type":"assistant","uuid":"d3","sessionId":"deep","timestamp":"2026-11-01T10:00:00Z","requestId":"r",'
            b'"message":{"id":"m","role":"assistant","usage":{"input_tokens":5},"content":[{"type":"tool_use",'
            b'"name":"T","input":' + b"[" * 5000 + b'"s"' + b"]" * 5000 + b"}]}}",
            b'{"x":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        ]
        bad = [b"[" * 3000 + b"]" * 3000, b'{"x":' + b"[" * 3000 + b"]" * 2999 + b"}"]
        append(f, b"".join(x + b"\n" for x in lines + bad) + line(9, "deep"))
        csmd.start()
        sync_now()
        assert current_raws(db, f) == [x.decode() for x in lines] + [line(9, "deep").rstrip(b"\n").decode()]
        assert [r[0] for r in db_rows(db, "SELECT error FROM sync_errors ORDER BY line_offset")] == [
            "JSON list, not an object", "invalid JSON: unexpected '}' at byte 6004"]
        assert db_rows(db, "SELECT uuid FROM events WHERE uuid IS NOT NULL ORDER BY id") == [
            ("d1",), ("d2",), ("d3",), ("u9",)]
        assert db_rows(db, "SELECT input_tokens FROM usage") == [(5,)]
        assert db_rows(db, "SELECT count(*) FROM message_text WHERE text = 'deep prompt'") == [(1,)]
        assert "Traceback" not in csmd.log()


# --- the property: any valid JSON object line, shaped like Claude Code's records ---------------------------

class Frag(str):
    """A JSON text to put into a record as it is (deep nesting, numbers beyond a double, escapes)."""


def dumps(value: Any) -> str:
    """JSON for a value holding ``Frag``s; lone surrogates in strings written as escapes, as JavaScript does."""
    frags: list[str] = []

    def mark(v: Any) -> Any:
        if isinstance(v, Frag):
            frags.append(v)
            return f"\x00frag{len(frags) - 1}\x00"
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    text = json.dumps(mark(value), ensure_ascii=False, separators=(",", ":"))
    text = re.sub(r'"\\u0000frag(\d+)\\u0000"', lambda m: frags[int(m.group(1))], text)
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)


odd_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from([
    "cut \ud83d", "\udc00", "\ud83d\ude00", "a\u2028b\u2029", "\x00", "\ufeff", "\u202e", "", " " * 3, "é" * 5])
big_ints = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 2**62,
                                             10**40, -1, 0]) | st.integers()
numbers = big_ints | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [Frag("1e400"), Frag("-1e400"), Frag("1E-400"), Frag("123456789012345678901234567890.5"), Frag("-0")])


def nested(depth: int, inner: str = "1") -> Frag:
    return Frag("[" * depth + inner + "]" * depth)


deep = st.integers(1, 1500).map(nested) | st.integers(1, 1200).map(lambda d: Frag('{"a":' * d + "null" + "}" * d))
scalars = st.none() | st.booleans() | numbers | odd_text
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner,
                                                                                          max_size=3), max_leaves=8)
hostile = values | values | deep
timestamps = st.one_of(
    st.sampled_from([TS, "2026-11-01T10:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]),
    st.sampled_from(["", "yesterday", "2026-13-45T99:99:99Z", "2026-11-01T10:00:00.123456789Z"]), hostile)


def maybe(plain: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the expected type, so the hostile ones reach the code that reads them."""
    return st.one_of(plain, plain, plain, hostile)


usage = st.fixed_dictionaries({}, optional={
    "input_tokens": maybe(big_ints), "output_tokens": maybe(big_ints), "cache_creation_input_tokens": maybe(big_ints),
    "cache_read_input_tokens": maybe(big_ints), "speed": maybe(odd_text),
    "cache_creation": maybe(st.fixed_dictionaries({}, optional={"ephemeral_5m_input_tokens": maybe(big_ints),
                                                                "ephemeral_1h_input_tokens": maybe(big_ints)})),
})
counts = st.fixed_dictionaries({k: big_ints for k in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                                                      "cache_read_input_tokens")},
                               optional={"cache_creation": st.fixed_dictionaries(
                                   {"ephemeral_5m_input_tokens": big_ints, "ephemeral_1h_input_tokens": big_ints})})
block = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": maybe(odd_text)}),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": maybe(odd_text)}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": maybe(odd_text), "name": maybe(odd_text),
                           "input": hostile}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": maybe(odd_text),
                           "content": maybe(odd_text | st.lists(st.fixed_dictionaries(
                               {"type": st.just("text"), "text": maybe(odd_text)}), max_size=2)),
                           "is_error": maybe(st.booleans())}),
    hostile,
)
content = maybe(odd_text | st.lists(block, max_size=3))
message = st.fixed_dictionaries({}, optional={
    "id": maybe(odd_text), "model": maybe(st.sampled_from(["claude-sonnet-4-5", "claude-opus-4-1", "<synthetic>"])
                                          | odd_text),
    "role": maybe(st.sampled_from(["user", "assistant"])), "content": content, "usage": maybe(usage),
})
common = {"uuid": maybe(odd_text), "parentUuid": maybe(odd_text | st.none()), "sessionId": maybe(odd_text),
          "timestamp": timestamps, "cwd": maybe(odd_text), "isSidechain": maybe(st.booleans()),
          "isMeta": maybe(st.booleans()), "requestId": maybe(odd_text)}
records = st.one_of(
    st.fixed_dictionaries({"type": st.just("assistant"), "timestamp": timestamps, "requestId": odd_text,
                           "message": st.fixed_dictionaries({"id": odd_text, "usage": counts},
                                                            optional={"model": odd_text, "content": content})}),
    st.fixed_dictionaries({"type": st.sampled_from(["user", "assistant"]), "message": maybe(message)},
                          optional=common),
    st.fixed_dictionaries({"type": st.just("progress"), "data": maybe(st.fixed_dictionaries(
        {"type": st.just("agent_progress"), "message": maybe(st.fixed_dictionaries(
            {"type": st.just("assistant"), "message": maybe(message)},
            optional={"timestamp": timestamps, "requestId": maybe(odd_text), "isSidechain": maybe(st.booleans())}))}))},
        optional=common),
    st.fixed_dictionaries({"type": st.sampled_from(["summary", "custom-title", "ai-title", "system", "queue-operation",
                                                    "file-history-snapshot", "x-unknown"])},
                          optional={"summary": maybe(odd_text), "customTitle": maybe(odd_text),
                                    "aiTitle": maybe(odd_text), **common}),
    st.dictionaries(odd_text, hostile, max_size=4),
)
json_lines = records.map(lambda r: dumps(r).encode())


class TestAnyValidObjectLine:
    def test_any_valid_object_line_is_stored_raw_and_stops_nothing(self, csmd: Csmd, projects: Path,
                                                                  db: Path) -> None:
        csmd.start()
        watch = Watch("--jsonl")  # the watch hook builds messages from every hostile line too
        marker_file = projects / "m" / "marker.jsonl"
        n = itertools.count()

        @settings(max_examples=100, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(lines=st.lists(json_lines, min_size=1, max_size=6))
        def example(lines: list[bytes]) -> None:
            i = next(n)
            f = projects / "h" / f"hostile{i}.jsonl"
            append(f, b"".join(x + b"\n" for x in lines))
            append(marker_file, line(i, "marker", uuid=f"marker-{i}"))  # another file, written after it
            wait_for(lambda: db_rows(db, "SELECT count(*) FROM events WHERE uuid = ?", f"marker-{i}")[0][0] == 1,
                     10, f"marker {i} in another file after the hostile lines")
            wait_for(lambda: len(current_raws(db, f)) == len(lines), 10, "the hostile lines")
            stored_exactly(db, f, lines)

        example()
        wait_for(lambda: any("hello" in x for x in watch.out), 10, "csm watch to show the markers")
        assert watch.stop() in (0, 130)
        assert csmd.alive
        assert db_rows(db, "SELECT count(*) FROM sync_errors") == [(0,)]
        # The only derived data a valid line may lack is a usage csm refuses to sum; any other
        # line error (a view, a sink, a batch that failed alone) is a bug made harmless, still a bug.
        assert {r[0] for r in db_rows(db, "SELECT part || ': ' || (error LIKE '%is not a token count%') "
                                          "FROM line_errors")} <= {"usage: 1"}
        assert status()["last_error"] is None
        assert "Traceback" not in csmd.log()

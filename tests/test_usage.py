"""Token accounting, rule by rule, with a real csmd; then csm against ccusage on real transcripts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import ccusage
import pytest
from lines import agent_progress, record, response
from csmtest import REAL, SHARED_REAL, Csmd, csm_json, run_csm, sql, wait_for

OPUS = "claude-opus-4-6"  # $5 / $25 / $6.25 (5-minute writes) / $10 (1-hour writes) / $0.50 per million


def message(msg_id: str | None, model: str = OPUS, inp: int = 0, out: int = 0, cc: int = 0, cr: int = 0,
            **usage: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"model": model, "role": "assistant", "type": "message",
                         "content": [{"type": "text", "text": "ok"}],
                         "usage": {"input_tokens": inp, "output_tokens": out, "cache_creation_input_tokens": cc,
                                   "cache_read_input_tokens": cr, **usage}}
    if msg_id is not None:
        m["id"] = msg_id
    return m


def assistant(msg: dict[str, Any], req: str | None, ts: str = "2026-02-10T12:00:00.000Z", session: str = "s1",
              sidechain: bool = False) -> dict[str, Any]:
    return response(f"u-{msg.get('id')}-{msg['usage']['output_tokens']}", session, ts, msg, req, isSidechain=sidechain)


def progress(msg: dict[str, Any], req: str, ts: str = "2026-02-10T12:00:00.000Z", session: str = "s1"
             ) -> dict[str, Any]:
    """A parent's agent_progress line embedding a subagent's response, as Claude Code 2.1 writes it."""
    return agent_progress(f"p-{msg.get('id')}", session, ts, response("x", session, ts, msg, req))


def write(path: Path, *lines: dict[str, Any], mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        f.writelines(record(obj, newline=True).decode() for obj in lines)


def usage_rows() -> list[dict[str, Any]]:
    return sql("SELECT * FROM usage ORDER BY timestamp, message_id")


def report(*args: str) -> list[dict[str, Any]]:
    return csm_json("query", "usage", *args)


def day_totals(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int, int, int]]:
    return {r["day"]: (r["input_tokens"], r["output_tokens"], r["cache_creation_tokens"], r["cache_read_tokens"])
            for r in rows}


class TestRules:
    def test_streamed_lines_count_once_with_the_final_output(self, csmd: Csmd, projects: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        write(f, *(assistant(message("m1", inp=3, out=out, cc=100, cr=1000), "r1") for out in (1, 9, 250)))
        csmd.start()
        rows = usage_rows()
        assert len(rows) == 1
        r = rows[0]
        assert (r["input_tokens"], r["output_tokens"], r["cache_creation_tokens"], r["cache_read_tokens"]) == (
            3, 250, 100, 1000)
        assert r["cost_usd"] == pytest.approx((3 * 5 + 250 * 25 + 100 * 6.25 + 1000 * 0.5) / 1e6)
        assert (r["session_id"], r["project"], r["message_id"], r["request_id"]) == ("s1", "p", "m1", "r1")

    def test_a_response_growing_across_commits_replaces_its_row(self, csmd: Csmd, projects: Path) -> None:
        f = projects / "p" / "s1.jsonl"
        write(f, assistant(message("m1", inp=3, out=1), "r1"))
        csmd.start()
        assert [r["output_tokens"] for r in usage_rows()] == [1]
        write(f, assistant(message("m1", inp=3, out=40), "r1"), mode="a")
        wait_for(lambda: [r["output_tokens"] for r in usage_rows()] == [40], what="the final line to win")
        assert day_totals(report("--tz", "UTC")) == {"2026-02-10": (3, 40, 0, 0)}
        assert report("--tz", "UTC")[0]["responses"] == 1

    def test_key_is_message_id_and_request_id(self, csmd: Csmd, projects: Path) -> None:
        write(projects / "p" / "s1.jsonl",
              assistant(message("m1", out=5), None), assistant(message("m1", out=7), None),  # no requestId: id alone
              assistant(message("m2", out=10), "r1"), assistant(message("m2", out=20), "r2"))  # two requests
        csmd.start()
        rows = usage_rows()
        assert [(r["message_id"], r["request_id"], r["output_tokens"]) for r in rows] == [
            ("m1", None, 7), ("m2", "r1", 10), ("m2", "r2", 20)]

    def test_a_response_without_message_id_counts_alone(self, csmd: Csmd, projects: Path) -> None:
        write(projects / "p" / "s1.jsonl", assistant(message(None, out=5), "r1"), assistant(message(None, out=5), "r1"))
        csmd.start()
        assert [r["output_tokens"] for r in usage_rows()] == [5, 5]

    def test_resumed_copies_in_other_files_count_once(self, csmd: Csmd, projects: Path) -> None:
        original = assistant(message("m1", inp=10, out=100, cr=500), "r1", session="old")
        copy = dict(original, sessionId="new", uuid="u-copy")
        write(projects / "p" / "old.jsonl", original)
        write(projects / "p" / "new.jsonl", copy, assistant(message("m2", inp=1, out=2), "r2", session="new"))
        csmd.start()
        assert day_totals(report("--tz", "UTC")) == {"2026-02-10": (11, 102, 0, 500)}
        assert sorted(r["message_id"] for r in usage_rows()) == ["m1", "m2"]

    def test_subagent_response_in_its_file_and_in_progress_counts_once(self, csmd: Csmd, projects: Path) -> None:
        msg = message("m-sub", inp=4, out=60, cr=900)
        write(projects / "p" / "s1.jsonl", progress(msg, "r-sub"))
        write(projects / "p" / "s1" / "subagents" / "agent-a1.jsonl", assistant(msg, "r-sub", sidechain=True))
        csmd.start()
        rows = usage_rows()
        assert len(rows) == 1
        # The embedded copy is not marked sidechain, so it is preferred (as ccusage does): the
        # parent session carries the subagent's usage.
        assert (rows[0]["session_id"], rows[0]["from_progress"], rows[0]["sidechain"]) == ("s1", 1, 0)
        assert day_totals(report("--tz", "UTC")) == {"2026-02-10": (4, 60, 0, 900)}

    def test_subagent_response_only_in_progress_is_counted(self, csmd: Csmd, projects: Path) -> None:
        write(projects / "p" / "s1.jsonl", progress(message("m-only", inp=2, out=30), "r-only"),
              {"type": "progress", "uuid": "h", "sessionId": "s1", "timestamp": "2026-02-10T12:00:01.000Z",
               "data": {"type": "hook_progress", "hookName": "usage"}})
        csmd.start()
        assert [(r["message_id"], r["output_tokens"], r["from_progress"]) for r in usage_rows()] == [
            ("m-only", 30, 1)]

    def test_a_non_sidechain_copy_beats_a_larger_sidechain_copy(self, csmd: Csmd, projects: Path) -> None:
        write(projects / "p" / "s1" / "subagents" / "agent-x.jsonl",
              assistant(message("m1", inp=1, out=999, cr=5000), "r1", sidechain=True))
        write(projects / "p" / "s1.jsonl", assistant(message("m1", inp=1, out=10), "r1"))
        csmd.start()
        rows = usage_rows()
        assert [(r["output_tokens"], r["sidechain"], r["session_id"]) for r in rows] == [(10, 0, "s1")]

    def test_lines_written_with_spaces_are_counted(self, csmd: Csmd, projects: Path) -> None:
        """ccusage 20 finds usage by the bytes '"usage":{' and skips these; csm reads the JSON."""
        shutil.copytree(REAL / "handmade", projects / "handmade")
        csmd.start()
        rows = usage_rows()
        assert sorted((r["input_tokens"], r["output_tokens"]) for r in rows) == [(35, 145), (85, 180), (168, 85),
                                                                                 (200, 25)]
        golden = ccusage.golden("handmade")["totals"]
        assert (golden["inputTokens"], golden["outputTokens"]) == (168, 85), "ccusage counts only the compact line"


class TestCost:
    def test_one_hour_cache_writes_and_unpriced_models(self, csmd: Csmd, projects: Path) -> None:
        split = {"cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600}}
        write(projects / "p" / "s1.jsonl",
              assistant(message("m1", cc=1000, **split), "r1"),
              assistant(message("m2", model="claude-imaginary-9", inp=7, out=3), "r2"),
              assistant(message("m3", model="<synthetic>"), "r3"))
        csmd.start()
        by_id = {r["message_id"]: r for r in usage_rows()}
        assert by_id["m1"]["cost_usd"] == pytest.approx((400 * 6.25 + 600 * 10) / 1e6)
        assert (by_id["m1"]["cache_creation_5m_tokens"], by_id["m1"]["cache_creation_1h_tokens"]) == (400, 600)
        assert by_id["m2"]["cost_usd"] is None and by_id["m2"]["input_tokens"] == 7
        assert by_id["m3"]["cost_usd"] == 0.0
        models = {r["model"]: r for r in report("--by", "model", "--tz", "UTC")}
        assert models["claude-imaginary-9"]["cost_usd"] is None
        assert models["claude-imaginary-9"]["unpriced_tokens"] == 10
        day = report("--tz", "UTC")[0]
        assert day["cost_usd"] == pytest.approx(by_id["m1"]["cost_usd"]) and day["unpriced_tokens"] == 10
        table = run_csm("query", "usage", "--tz", "UTC", "--by", "model")
        assert table.returncode == 0
        line = next(x for x in table.stdout.splitlines() if x.startswith("claude-imaginary-9"))
        assert line.split()[-1] == "unpriced*" and "$" not in line
        assert "unpriced" in table.stderr and "claude-imaginary-9" in table.stderr


class TestReport:
    def test_days_are_cut_in_the_requested_zone(self, csmd: Csmd, projects: Path) -> None:
        # Kathmandu is UTC+5:45: 18:14Z is still the 10th there, 18:16Z is the 11th.
        write(projects / "p" / "s1.jsonl",
              assistant(message("a", inp=1), "r", ts="2026-02-10T18:14:00.000Z"),
              assistant(message("b", inp=2), "r", ts="2026-02-10T18:16:00.000Z"),
              assistant(message("c", inp=4), "r", ts="2026-02-10T23:30:00.000Z"))
        csmd.start()
        assert {d: t[0] for d, t in day_totals(report("--tz", "UTC")).items()} == {"2026-02-10": 7}
        assert {d: t[0] for d, t in day_totals(report("--tz", "Asia/Kathmandu")).items()} == {
            "2026-02-10": 1, "2026-02-11": 6}
        assert {d: t[0] for d, t in day_totals(report("--tz", "America/New_York")).items()} == {"2026-02-10": 7}
        assert {d: t[0] for d, t in day_totals(report("--tz", "Europe/Berlin")).items()} == {
            "2026-02-10": 3, "2026-02-11": 4}
        kathmandu = report("--tz", "Asia/Kathmandu", "--since", "2026-02-11", "--until", "2026-02-11")
        assert [r["day"] for r in kathmandu] == ["2026-02-11"] and kathmandu[0]["input_tokens"] == 6

    def test_groups_filters_and_formats(self, csmd: Csmd, projects: Path) -> None:
        write(projects / "alpha" / "s1.jsonl", assistant(message("a", inp=1, out=1), "r", ts="2026-01-31T10:00:00Z"),
              assistant(message("b", inp=2, out=2), "r", ts="2026-02-02T10:00:00Z"))
        write(projects / "beta" / "s2.jsonl", assistant(message("c", model="claude-haiku-4-5-20251001", inp=4),
                                                        "r", ts="2026-02-03T10:00:00Z", session="s2"))
        csmd.start()
        assert [(r["week"], r["input_tokens"]) for r in report("--by", "week", "--tz", "UTC")] == [
            ("2026-01-26", 1), ("2026-02-02", 6)]
        assert [(r["month"], r["input_tokens"]) for r in report("--by", "month", "--tz", "UTC")] == [
            ("2026-01", 1), ("2026-02", 6)]
        assert {(r["session_id"], r["project"], r["input_tokens"]) for r in report("--by", "session")} == {
            ("s1", "alpha", 3), ("s2", "beta", 4)}
        assert {r["project"]: r["responses"] for r in report("--by", "project")} == {"alpha": 2, "beta": 1}
        per_session = sql("SELECT session_id, responses, input_tokens, output_tokens, cost_usd FROM session_usage "
                          "ORDER BY session_id")
        summed = sql("SELECT session_id, count(*) AS responses, sum(input_tokens) AS input_tokens, "
                     "sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd FROM usage "
                     "GROUP BY session_id ORDER BY session_id")
        assert per_session == summed and [r["input_tokens"] for r in per_session] == [3, 4]
        assert [r["input_tokens"] for r in report("--project", "alpha", "--tz", "UTC")] == [1, 2]
        assert [r["day"] for r in report("--since", "20260202", "--tz", "UTC")] == ["2026-02-02", "2026-02-03"]
        assert [r["day"] for r in report("--until", "2026-02-02", "--tz", "UTC")] == ["2026-01-31", "2026-02-02"]
        csv_out = run_csm("query", "usage", "--tz", "UTC", "--by", "month", "--csv").stdout.splitlines()
        assert csv_out[0] == ("month,responses,input_tokens,output_tokens,cache_creation_tokens,cache_read_tokens,"
                              "total_tokens,cost_usd,unpriced_tokens")
        assert csv_out[1].startswith("2026-01,1,1,1,0,0,2,")
        jsonl = [json.loads(x) for x in run_csm("query", "usage", "--by", "project", "--jsonl").stdout.splitlines()]
        assert [r["project"] for r in jsonl] == ["alpha", "beta"]  # by cost, highest first
        table = run_csm("query", "usage", "--tz", "UTC").stdout.splitlines()
        assert table[0].split() == ["day", "responses", "input", "output", "cache_write", "cache_read", "total", "cost"]
        assert table[-1].split()[:3] == ["Total", "3", "7"]

    def test_bad_arguments_get_one_line(self, csmd: Csmd, projects: Path) -> None:
        csmd.start()
        empty = run_csm("query", "usage")
        assert empty.returncode == 0 and empty.stdout == "" and "no API responses" in empty.stderr
        assert report() == []
        for args, words in ((["--tz", "Mars/Olympus"], "unknown time zone"), (["--since", "last tuesday"], "not a time"),
                            (["--since", "2026-02-10", "--until", "2026-02-01"], "before")):
            r = run_csm("query", "usage", *args)
            assert r.returncode == 2, (args, r.stderr)  # read by the client now: a usage error
            assert words in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


class TestMatchesCcusage:
    """Daily totals equal ccusage 20.0.24's token for token on Claude Code's own transcripts."""

    @pytest.mark.parametrize("name", ["real", "usage"])
    def test_daily_totals_equal_ccusage_golden(self, name: str, csmd: Csmd, tmp_path: Path) -> None:
        config = ccusage.layout(name, tmp_path / "fixture")
        csmd.args = ["--root", str(config / "projects")]
        csmd.start()
        assert_matches(report("--tz", "UTC"), ccusage.golden(name))

    def test_streamed_lines_without_request_id_count_once_where_ccusage_counts_each(
            self, csmd: Csmd, tmp_path: Path) -> None:
        """A deliberate difference (README, "Against ccusage"): third-party backends write responses without
        ``requestId`` whose streamed lines carry the usage so far. ccusage keys a response by message.id
        and requestId, so without one it counts every line; csm counts the response once, at its final usage."""
        config = ccusage.layout("third-party", tmp_path / "fixture")
        lines = [json.loads(x) for f in (config / "projects").rglob("*.jsonl") for x in f.read_text().splitlines()]
        answers = [x for x in lines if x["type"] == "assistant"]
        assert any("requestId" not in x for x in answers) and any("requestId" in x for x in answers)

        def tokens(u: dict[str, int]) -> tuple[int, int, int, int]:
            return (u["input_tokens"], u["output_tokens"], u["cache_creation_input_tokens"],
                    u["cache_read_input_tokens"])

        def total(rows: list[tuple[int, int, int, int]]) -> tuple[int, ...]:
            return tuple(sum(col) for col in zip(*rows))

        every_line = [tokens(x["message"]["usage"]) for x in answers if "requestId" not in x]
        keyed = {(x["message"]["id"], x["requestId"]): tokens(x["message"]["usage"]) for x in answers if "requestId" in x}
        final: dict[str, tuple[int, int, int, int]] = {}
        for x in answers:  # each response's largest (last) usage
            final[x["message"]["id"]] = max(final.get(x["message"]["id"], (0, 0, 0, 0)), tokens(x["message"]["usage"]),
                                            key=sum)
        d = ccusage.golden("third-party")["daily"]
        assert len(d) == 1
        theirs = (d[0]["inputTokens"], d[0]["outputTokens"], d[0]["cacheCreationTokens"], d[0]["cacheReadTokens"])
        assert theirs == total(every_line + list(keyed.values())), "ccusage counts each line of a keyless response"

        csmd.args = ["--root", str(config / "projects")]
        csmd.start()
        (ours,) = report("--tz", "UTC")
        assert ours["responses"] == len(final) == 3
        assert (ours["input_tokens"], ours["output_tokens"], ours["cache_creation_tokens"],
                ours["cache_read_tokens"]) == total(list(final.values())) == (36, 510, 300, 12000)
        assert theirs[1] - ours["output_tokens"] == 47, "the partial lines' output (2 + 40 + 5) counted again"

    def test_live_ccusage_agrees_with_the_golden_files(self) -> None:
        binary = ccusage.find()
        if not binary:
            pytest.skip("ccusage not installed: set CSM_CCUSAGE to its path (npm install ccusage@20.0.24) "
                        "to cross-check the golden files live")
        for name in ("real", "usage", "handmade", "third-party"):
            live = ccusage.run(binary, name)
            assert live["daily"] == ccusage.golden(name)["daily"], f"ccusage's answer for '{name}' changed"

    def test_every_reference_transcript_matches_live_ccusage(self, csmd: Csmd, tmp_path: Path) -> None:
        """All of Claude Code's own transcripts in the project's reference set (29 MB), when both are here."""
        binary = ccusage.find()
        shared = Path(os.environ.get("CSM_SHARED_REAL", SHARED_REAL))
        spotter = shared / "marot__spotter" / "test" / "fixtures" / "transcripts"
        real_projects = shared / "handgemacht-ai__claude-code-log" / "test" / "test_data" / "real_projects"
        if not binary or not spotter.is_dir() or not real_projects.is_dir():
            pytest.skip("needs ccusage (CSM_CCUSAGE) and the shared reference transcripts (CSM_SHARED_REAL)")
        projects = tmp_path / "ref" / ".claude" / "projects"
        shutil.copytree(spotter, projects / "spotter", ignore=shutil.ignore_patterns("*.txt"))
        shutil.copytree(real_projects, projects, dirs_exist_ok=True)
        csmd.args = ["--root", str(projects)]
        csmd.start()
        assert_matches(report("--tz", "UTC"), ccusage.run_in(binary, projects.parent))


def assert_matches(csm: list[dict[str, Any]], golden: dict[str, Any]) -> None:
    theirs = {d["date"]: d for d in golden["daily"]}
    assert [r["day"] for r in csm] == sorted(theirs)
    for r in csm:
        d = theirs[r["day"]]
        assert (r["input_tokens"], r["output_tokens"], r["cache_creation_tokens"], r["cache_read_tokens"]) == (
            d["inputTokens"], d["outputTokens"], d["cacheCreationTokens"], d["cacheReadTokens"]), r["day"]
        assert r["total_tokens"] == d["totalTokens"]
        assert r["cost_usd"] == pytest.approx(d["totalCost"], abs=2e-6), r["day"]  # csm rounds to 1e-6
        assert r["unpriced_tokens"] == 0

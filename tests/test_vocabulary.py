"""One vocabulary (issue 11): one time grammar, one --project rule, one set of output options, in every command.

The grammar is checked as a function (a fixed "now", zones with DST and a +05:45 offset), then
every form in every command that takes it, through the real CLI code against one real csmd
per module (in-process with click's runner: no interpreter start per call; the one-line
errors go through the real ``csm`` process, since they are ``main``'s work).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from csmtest import Csmd, run_csm, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from test_browse import Watch, user
from test_usage import assistant, message

from csm.client.cli import cli
from csm.shared import timespec

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
KATHMANDU = ZoneInfo("Asia/Kathmandu")


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the grammar, as a function ------------------------------------------------------------------


@pytest.mark.parametrize(("now", "form", "since", "until"), [
    # Berlin springs forward on 2026-03-29 (a 23-hour day): days are calendar days, not 24 h blocks.
    ("2026-03-30T10:00Z", "7d", "2026-03-23T23:00Z", "2026-03-24T23:00Z"),
    ("2026-03-30T10:00Z", "1w", "2026-03-23T23:00Z", "2026-03-24T23:00Z"),
    ("2026-03-30T10:00Z", "2d", "2026-03-28T23:00Z", "2026-03-29T22:00Z"),
    ("2026-03-30T10:00Z", "yesterday", "2026-03-28T23:00Z", "2026-03-29T22:00Z"),
    ("2026-03-30T10:00Z", "2026-03-29", "2026-03-28T23:00Z", "2026-03-29T22:00Z"),
    ("2026-03-30T10:00Z", "20260329", "2026-03-28T23:00Z", "2026-03-29T22:00Z"),
    ("2026-03-30T10:00Z", "1d", "2026-03-29T22:00Z", "2026-03-30T22:00Z"),
    ("2026-03-30T10:00Z", "today", "2026-03-29T22:00Z", "2026-03-30T22:00Z"),
    # ... and falls back on 2026-10-25 (25 hours).
    ("2026-10-26T12:00Z", "2d", "2026-10-24T22:00Z", "2026-10-25T23:00Z"),
    ("2026-10-26T12:00Z", "3d", "2026-10-23T22:00Z", "2026-10-24T22:00Z"),
    ("2026-10-26T12:00Z", "2026-10-25", "2026-10-24T22:00Z", "2026-10-25T23:00Z"),
    # Instants are instants, DST or not.
    ("2026-03-29T03:00Z", "12h", "2026-03-28T15:00Z", "2026-03-28T15:00Z"),
    ("2026-03-29T03:00Z", "90m", "2026-03-29T01:30Z", "2026-03-29T01:30Z"),
    ("2026-03-30T10:00Z", "2026-03-29T01:30", "2026-03-29T00:30Z", "2026-03-29T00:30Z"),
    ("2026-03-30T10:00Z", "2026-03-29T03:30", "2026-03-29T01:30Z", "2026-03-29T01:30Z"),
    ("2026-03-30T10:00Z", "2026-03-29T02:30", "2026-03-29T01:30Z", "2026-03-29T01:30Z"),  # skipped: read at +01:00
    ("2026-10-26T12:00Z", "2026-10-25T02:30", "2026-10-25T00:30Z", "2026-10-25T00:30Z"),  # twice: the first
    ("2026-03-30T10:00Z", "2026-03-29T14:30+05:45", "2026-03-29T08:45Z", "2026-03-29T08:45Z"),
    ("2026-03-30T10:00Z", "2026-03-29T14:30Z", "2026-03-29T14:30Z", "2026-03-29T14:30Z"),
    ("2026-03-30T10:00Z", " TODAY ", "2026-03-29T22:00Z", "2026-03-30T22:00Z"),
])
@pytest.mark.parametrize("machine", ["Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3"])
def test_each_form_in_berlin(now: str, form: str, since: str, until: str, machine: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert timespec.parse(form, zone=BERLIN, now=z(now)) == z(since)
    assert timespec.parse(form, zone=BERLIN, now=z(now), end=True) == z(until)
    # The machine's own zone (the C library's rules, from tzdata or a POSIX rule) gives the same instants.
    monkeypatch.setenv("TZ", machine)
    time.tzset()
    try:
        assert timespec.parse(form, now=z(now)) == z(since)
        assert timespec.parse(form, now=z(now), end=True) == z(until)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(("now", "form", "since"), [
    ("2026-02-10T20:00Z", "today", "2026-02-10T18:15Z"),  # 01:45 on the 11th in Kathmandu
    ("2026-02-10T20:00Z", "yesterday", "2026-02-09T18:15Z"),
    ("2026-02-10T20:00Z", "2d", "2026-02-09T18:15Z"),
    ("2026-02-10T20:00Z", "2026-02-11T08:00", "2026-02-11T02:15Z"),
    ("2026-02-10T20:00Z", "2026-02-11T08:00+05:45", "2026-02-11T02:15Z"),
    ("2026-02-10T20:00Z", "2026-02-11T08:00+00:00", "2026-02-11T08:00Z"),
])
def test_kathmandu_quarter_hour_offset(now: str, form: str, since: str) -> None:
    assert timespec.parse(form, zone=KATHMANDU, now=z(now)) == z(since)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), now=st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC)),
       zone=st.sampled_from([BERLIN, KATHMANDU, ZoneInfo("America/Santiago"), ZoneInfo("Australia/Lord_Howe"), UTC]))
def test_nd_is_the_local_midnight_of_the_day_n_minus_1_days_back(n: int, now: datetime, zone: ZoneInfo) -> None:
    """Nd, Nw and the date they name are one instant: the first instant of that local day."""
    start = timespec.parse(f"{n}d", zone=zone, now=now)
    day = now.astimezone(zone).date() - timedelta(days=n - 1)
    assert start == timespec.parse(day.isoformat(), zone=zone, now=now)
    assert start.astimezone(zone).date() == day  # the first instant of the day (in UTC: a DST gap at midnight
    assert (start - timedelta(seconds=1)).astimezone(zone).date() == day - timedelta(days=1)  # starts it later)
    end = timespec.parse(f"{n}d", zone=zone, now=now, end=True)
    assert end.astimezone(zone).date() == day + timedelta(days=1)
    assert (end - timedelta(seconds=1)).astimezone(zone).date() == day and timedelta(hours=22) <= end - start <= timedelta(
        hours=26)
    if n % 7 == 0:
        assert timespec.parse(f"{n // 7}w", zone=zone, now=now) == start


@settings(max_examples=300, deadline=None)
@given(wall=st.one_of(st.datetimes(datetime(1990, 1, 1), datetime(2037, 12, 31)), st.sampled_from([
    datetime(2026, 9, 6, 0, 0), datetime(2026, 3, 29, 2, 30), datetime(2026, 3, 8, 0, 30),  # skipped: Santiago,
    datetime(2026, 11, 1, 0, 30), datetime(2026, 10, 4, 2, 15), datetime(2026, 10, 25, 2, 30)])),  # Berlin, Havana
       date_only=st.booleans(), end=st.booleans(),
       name=st.sampled_from(["Europe/Berlin", "America/Santiago", "Asia/Kathmandu", "Australia/Lord_Howe",
                             "America/Havana", "Asia/Gaza", "UTC"]))
def test_the_machine_zone_reads_times_as_zoneinfo_does(wall: datetime, date_only: bool, end: bool, name: str) -> None:
    """Gaps and repeated hours included (Santiago and Havana skip midnight, Lord Howe moves by 30 minutes)."""
    text = wall.date().isoformat() if date_only else wall.replace(microsecond=0).isoformat()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", name)
        time.tzset()
        try:
            assert timespec.parse(text, end=end) == timespec.parse(text, end=end, zone=ZoneInfo(name))
        finally:
            mp.undo()
            time.tzset()


@pytest.mark.parametrize(("form", "words"), [
    ("last tuesday", "is not a time"), ("7x", "is not a time"), ("", "is not a time"),
    ("0d", "at least 1"), ("0w", "at least 1"),
    ("99999999d", "out of range"), ("99999999999999999999h", "out of range"), ("99999-01-01", "out of range"),
    ("9999-12-31T23:59-05:00", "out of range"), ("0001-01-01T00:00+05:45", "out of range"),
])
def test_bad_forms_say_what_is_accepted(form: str, words: str) -> None:
    with pytest.raises(ValueError) as e:
        timespec.parse(form, zone=KATHMANDU, end=True)
    assert words in str(e.value)
    if "at least" not in words:
        assert timespec.FORMS in str(e.value)


# --- every form in every command, against one csmd -------------------------------------------------


COMMANDS = {  # each lists the sessions it finds, by session id
    "sessions": ["query", "sessions", "-n", "1000"],
    "search": ["query", "search", "needle", "-n", "1000"],
    "usage": ["query", "usage", "--by", "session"],
}
FORMS = ["today", "yesterday", "3d", "2w", "30m", "12h", "2026-02-10", "20260210", "2026-02-10T12:00",
         "2026-02-10T12:00+05:45", "2026-02-10T12:00Z"]
ZONE = "Asia/Kathmandu"  # the module's local zone: +05:45, so local and UTC forms differ


def _lines(session: str, ts: datetime) -> bytes:
    stamp = ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    answer = assistant(message(f"m-{session}", inp=1, out=1), f"r-{session}", ts=stamp, session=session)
    return user(f"u-{session}", session, stamp, f"needle {session}") + json.dumps(answer).encode() + b"\n"


def _write(folder: Path, sessions: dict[str, datetime]) -> None:
    for sid, ts in sessions.items():
        path = folder / f"{sid}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_lines(sid, ts))


class Archive:
    """A csmd of the module: its environment and the time each session happened."""

    def __init__(self, env: dict[str, str], times: dict[str, datetime]) -> None:
        self.env = env
        self.times = times


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    base = tmp_path_factory.mktemp("vocab")
    run = Path(tempfile.mkdtemp(prefix="csm-", dir="/tmp"))
    run.chmod(0o700)
    env = {"HOME": str(base / "home"), "XDG_DATA_HOME": str(base / "data"), "XDG_CONFIG_HOME": str(base / "config"),
           "XDG_STATE_HOME": str(base / "state"), "XDG_CACHE_HOME": str(base / "cache"), "XDG_RUNTIME_DIR": str(run),
           "CLAUDE_CONFIG_DIR": str(base / "claude"), "CSM_RAISE_ERRORS": "", "TZ": ZONE}
    now = datetime.now(UTC)
    times = {"m10": now - timedelta(minutes=10), "h5": now - timedelta(hours=5), "d2": now - timedelta(days=2),
             "d10": now - timedelta(days=10), "d20": now - timedelta(days=20),
             "feb10": z("2026-02-10T12:30Z"), "feb10mid": z("2026-02-10T09:00Z"),
             "feb10early": z("2026-02-10T06:00Z"), "feb9": z("2026-02-09T19:00Z")}
    (base / "home").mkdir()
    projects = base / "claude" / "projects"
    _write(projects / "-home-me-MyRepo", {k: v for k, v in times.items() if k.startswith(("m", "d"))})
    _write(projects / "-home-me-other", {k: v for k, v in times.items() if k.startswith(("h", "feb"))})
    with open(projects / "-home-me-MyRepo" / "d20.jsonl", "ab") as f:
        f.write(b"not json\n")  # one bad line, for 'csm query errors'
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("NOTIFY_SOCKET", raising=False)
        d = Csmd(base).start()
        try:
            yield Archive(env, times)
        finally:
            assert d.stop() == 0, d.log()
            shutil.rmtree(run, ignore_errors=True)


@pytest.fixture
def here(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> Iterator[Archive]:
    """This test talks to the module's csmd, in its zone."""
    for k, v in archive.env.items():
        monkeypatch.setenv(k, v)
    time.tzset()
    yield archive
    monkeypatch.undo()
    time.tzset()


def csm(*args: str) -> Any:
    """The CLI's JSON output, in-process."""
    r = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert r.exit_code == 0, (args, r.output)
    return json.loads(r.output) if r.output.strip() else []


def found(command: str, *args: str) -> set[str]:
    return {r["session_id"] for r in csm(*COMMANDS[command], *args)}


def bound(form: str, end: bool) -> datetime:
    """The spec, written out: days are local calendar days, instants are instants."""
    zone = ZoneInfo(ZONE)
    now = datetime.now(UTC)
    today = now.astimezone(zone).date()
    days = {"today": today, "yesterday": today - timedelta(days=1), "3d": today - timedelta(days=2),
            "2w": today - timedelta(days=13), "2026-02-10": date(2026, 2, 10), "20260210": date(2026, 2, 10)}
    if form in days:
        return datetime.combine(days[form] + timedelta(days=end), datetime.min.time(), tzinfo=zone)
    if form in ("30m", "12h"):
        return now - (timedelta(minutes=30) if form == "30m" else timedelta(hours=12))
    written = z(form)
    return written if written.tzinfo else written.replace(tzinfo=zone)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_form_in_every_command(command: str, form: str, here: Archive) -> None:
    since, until = bound(form, end=False), bound(form, end=True)
    want_since = {s for s, t in here.times.items() if t >= since}
    want_until = {s for s, t in here.times.items() if t < until}
    assert found(command, "--since", form) == want_since, (form, since)
    assert found(command, "--until", form) == want_until, (form, until)


def test_the_forms_tell_sessions_apart(here: Archive) -> None:
    """The fixture is built so that the forms above disagree: each would catch a wrong reading."""
    assert found("sessions", "--since", "2026-02-10T12:00") == found("sessions", "--since", "2026-02-10T12:00+05:45")
    assert "feb10mid" in found("sessions", "--since", "2026-02-10T12:00")  # local: 06:15 UTC
    assert "feb10mid" not in found("sessions", "--since", "2026-02-10T12:00Z")
    assert found("sessions", "--since", "2026-02-10", "--until", "2026-02-10") == {  # 19:00 UTC on the 9th: the
        "feb9", "feb10early", "feb10mid", "feb10"}                                  # 10th's 00:45 here
    assert found("sessions", "--since", "2026-02-10T00:00Z", "--until", "2026-02-11T00:00Z") == {
        "feb10early", "feb10mid", "feb10"}


def test_dst_days_are_calendar_days_in_every_command(csmd: Csmd, projects: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """In Berlin 2026-03-29 has 23 hours and 2026-10-25 has 25: a day given is that local day, whole."""
    times = {"mar28late": "2026-03-28T22:30Z", "mar29late": "2026-03-29T21:30Z", "mar30early": "2026-03-29T22:30Z",
             "oct24late": "2026-10-24T21:30Z", "oct25early": "2026-10-24T22:30Z", "oct25late": "2026-10-25T22:30Z",
             "oct26early": "2026-10-25T23:30Z"}
    _write(projects / "p", {k: z(v) for k, v in times.items()})
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        csmd.start()
        for command in COMMANDS:
            assert found(command, "--since", "2026-03-29", "--until", "2026-03-29") == {"mar29late"}, command
            assert found(command, "--since", "2026-10-25", "--until", "2026-10-25") == {"oct25early", "oct25late"}
            assert found(command, "--since", "2026-10-25T00:00", "--until", "2026-10-26T00:00") == {
                "oct25early", "oct25late"}
        days = {r["day"]: r["responses"] for r in csm("query", "usage")}
        assert days == {"2026-03-28": 1, "2026-03-29": 1, "2026-03-30": 1, "2026-10-24": 1, "2026-10-25": 2,
                        "2026-10-26": 1}
    finally:
        monkeypatch.undo()
        time.tzset()


def test_usage_with_an_instant_cutting_a_quarter_hour_is_exact(here: Archive) -> None:
    """usage sums quarter hours; a bound inside one reads that quarter hour's own responses."""
    rows = csm("query", "usage", "--by", "session", "--since", "2026-02-10T12:29:59Z", "--until",
               "2026-02-10T12:30:01Z")
    assert [(r["session_id"], r["responses"]) for r in rows] == [("feb10", 1)]
    assert csm("query", "usage", "--since", "2026-02-10T12:30:01Z", "--until", "2026-02-10T12:44:00Z") == []
    days = csm("query", "usage", "--since", "2026-02-10T11:00Z", "--until", "2026-02-10T12:40Z", "--tz", "UTC")
    assert [(d["day"], d["responses"]) for d in days] == [("2026-02-10", 1)]


def test_csmd_refuses_a_bound_that_is_not_an_instant(here: Archive) -> None:
    """A csm of the old grammar sent usage its words ('7d'); csmd now takes instants only, and says why."""
    from csm.client.transport import request
    from csm.shared.errors import QueryError
    from csm.shared.protocol import UsageReport

    with pytest.raises(QueryError, match="'7d' is not a UTC instant .*csm and csmd differ in version"):
        request(UsageReport(since="7d"), timeout_s=10)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_one_project_rule_in_every_command(command: str, here: Archive) -> None:
    mine = {s for s in here.times if s.startswith(("m", "d"))}
    assert found(command, "-p", "myrepo") == mine, "a substring, in any case"
    assert found(command, "--project", "MYREPO") == mine
    assert found(command, "-p", "-home-me-") == set(here.times)
    assert found(command, "-p", "me-other") == set(here.times) - mine
    assert found(command, "-p", "nosuch") == set()


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("args", "words"), [
    (["--since", "99999999d"], "Invalid value for '--since': '99999999d' is out of range"),
    (["--until", "99999-01-01"], "Invalid value for '--until': '99999-01-01' is out of range"),
    (["--since", "last tuesday"], "Invalid value for '--since': 'last tuesday' is not a time: use today, yesterday"),
    (["--since", "2026-02-10", "--until", "2026-02-01"], "'2026-02-01' ends before --since '2026-02-10' begins"),
])
def test_a_bad_time_is_one_line_and_exit_2(command: str, args: list[str], words: str, here: Archive) -> None:
    r = run_csm(*COMMANDS[command], *args)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.startswith("csm: ") and r.stderr.count("\n") == 1 and words in r.stderr, r.stderr


# --- output options: the same keys for the same reply ------------------------------------------


def _keys(args: list[str], fmt: str) -> list[list[str]]:
    """The keys of each object (or the CSV header) ``args`` prints in ``fmt``."""
    out = CliRunner().invoke(cli, [*args, f"--{fmt}"], catch_exceptions=False).output
    if fmt == "csv":
        return [next(csv.reader(io.StringIO(out)))]
    if fmt == "jsonl":
        return [list(json.loads(x)) for x in out.splitlines()]
    data = json.loads(out)
    return [list(r) for r in data] if isinstance(data, list) else [list(data)]


@pytest.mark.parametrize("args", [
    ["status"], ["config", "show"], ["query", "sessions"], ["query", "search", "needle"], ["query", "usage"],
    ["query", "errors"], ["query", "sql", "SELECT 1 AS one, 'x' AS two"], ["sync", "--now"], ["db", "check"],
    ["service", "status"],
], ids=lambda a: " ".join(a[:2]))
def test_json_jsonl_and_csv_print_the_same_keys(args: list[str], here: Archive) -> None:
    keys = {fmt: _keys(args, fmt) for fmt in ("json", "jsonl", "csv")}
    first = keys["json"][0] if keys["json"] else None
    assert first or args == ["query", "errors"]
    for fmt, each in keys.items():
        assert all(k == first for k in each if k), (fmt, each, first)


def test_the_same_reply_has_the_same_keys_in_every_command(here: Archive) -> None:
    status = csm("status")
    assert csm("service", "status")["daemon"].keys() == status.keys()
    assert "last_error" in status and "backlog" in status, "defaults are printed too"
    assert "type" not in status, "no wire tag"
    show = csm("query", "show", "feb10")
    entry_keys = list(show["entries"][0])
    lines = CliRunner().invoke(cli, ["query", "show", "feb10", "--jsonl"]).output.splitlines()
    assert [list(json.loads(x)) for x in lines] == [entry_keys] * len(show["entries"])
    assert set(show["session"]) >= {"session_id", "project", "started", "resume"}


def test_watch_takes_the_one_project_rule_and_the_output_options(csmd: Csmd, projects: Path) -> None:
    _write(projects / "-home-me-MyRepo", {"w1": datetime.now(UTC)})
    csmd.start()
    mine, rows = Watch("-p", "myrepo", "--jsonl"), Watch("-p", "MYREPO", "--csv")
    _write(projects / "-home-me-other", {"w2": datetime.now(UTC)})
    with open(projects / "-home-me-MyRepo" / "w1.jsonl", "ab") as f:
        f.write(_lines("w1", datetime.now(UTC)).replace(b"u-w1", b"u-w1b").replace(b"m-w1", b"m-w1b"))
    wait_for(lambda: len(mine.out) >= 2 and len(rows.out) >= 3, what="both watches to print")
    assert mine.stop() in (0, 130) and rows.stop() in (0, 130)
    entries = [json.loads(x) for x in mine.out]
    assert {e["project"] for e in entries} == {"-home-me-MyRepo"}, "the other project is not followed"
    header, *body = list(csv.reader(rows.out))
    assert header == list(entries[0]) and len(body) == len(entries)
    assert {r[header.index("project")] for r in body} == {"-home-me-MyRepo"}

"""The watcher with real files, a real csmd and real inotify: every case asserts on rows.

Where a test must show that the *watcher* (not the periodic rescan) delivered a line, its
config sets a rescan interval far longer than the test's deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lines import append, prompt, record
from csmtest import Csmd, csm_json, db_rows, run_csm, sql, wait_for
from csm.client.transport import request
from csm.shared import protocol

NO_RESCAN = "rescan_interval_s = 3600\n"


def line(i: int, session: str = "s1", pad: int = 0) -> bytes:
    """A prompt with a uuid unique across sessions (``s1-u3``)."""
    return record(prompt(f"{session}-u{i}", session, "2026-11-01T10:00:00.000Z", f"hello {i}" + "x" * pad), newline=True)


def configure(tmp_path: Path, text: str) -> Path:
    """Write the default config file (``$XDG_CONFIG_HOME/csm/config.toml``)."""
    path = tmp_path / "config" / "csm" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ask(msg: protocol.Message) -> protocol.Message:
    """One request through the CLI's own transport, in-process: polling with a subprocess per try is slow."""
    return request(msg, timeout_s=10)


def rows(query: str) -> list[list[object]]:
    reply = ask(protocol.Query(sql=query))
    assert isinstance(reply, protocol.Rows), reply
    return reply.rows


def count(where: str = "1") -> int:
    return rows(f"SELECT count(*) FROM lines WHERE {where}")[0][0]


def status() -> protocol.StatusReply:
    reply = ask(protocol.Status())
    assert isinstance(reply, protocol.StatusReply), reply
    return reply


def inotify_watches(pid: int) -> int:
    """Watches the kernel holds for ``pid``'s inotify instances (0 when it has none)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                n += Path(f"/proc/{pid}/fdinfo/{fd}").read_text().count("inotify wd:")
        except OSError:
            continue
    return n


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid``, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class TestEvents:
    def test_append_to_an_existing_file(self, csmd: Csmd, projects: Path, tmp_path: Path) -> None:
        configure(tmp_path, NO_RESCAN)
        f = projects / "p" / "s1.jsonl"
        append(f, line(0) + line(1))
        csmd.start()
        assert count() == 2
        whole = line(2)
        append(f, whole[:20])
        append(projects / "p" / "marker.jsonl", line(0, "marker"))
        wait_for(lambda: count("session_id = 'marker'") == 1, what="a marker written after the partial line")
        assert count("session_id = 's1'") == 2, "a line without its newline must wait"
        append(f, whole[20:])
        wait_for(lambda: count("session_id = 's1'") == 3, timeout=5, what="the appended line")

    def test_new_file_in_a_new_project_folder(self, csmd: Csmd, projects: Path, tmp_path: Path) -> None:
        configure(tmp_path, NO_RESCAN)
        csmd.start()
        append(projects / "-home-me-newproj" / "s2.jsonl", line(0, "s2") + line(1, "s2"))
        wait_for(lambda: count("session_id = 's2'") == 2, timeout=5, what="a file in a project folder made after start")
        assert sql("SELECT project FROM sessions WHERE session_id = 's2'") == [{"project": "-home-me-newproj"}]

    def test_new_subagent_folders(self, csmd: Csmd, projects: Path, tmp_path: Path) -> None:
        """Files written into a brand-new ``<session>/subagents/`` folder, however fast, are all read.

        Two ways in: the folder made and written at once (the race Claude Code runs), and
        a folder built elsewhere and moved in whole, whose file no watch can have seen.
        """
        configure(tmp_path, NO_RESCAN)
        main = projects / "p" / "sess.jsonl"
        append(main, line(0, "sess"))
        csmd.start()
        agent = projects / "p" / "sess" / "subagents" / "agent-a1.jsonl"
        append(agent, line(0, "sess") + line(1, "sess"))
        built = tmp_path / "elsewhere" / "sess2"
        append(built / "subagents" / "agent-b2.jsonl", line(0, "sess2"))
        append(projects / "p" / "sess2.jsonl", line(1, "sess2"))
        shutil.move(str(built), str(projects / "p" / "sess2"))

        def subagents() -> list[list[object]]:
            return rows("SELECT session_id, parent_session_id, lines FROM sessions WHERE is_subagent ORDER BY 1")

        wait_for(lambda: subagents() == [["agent-a1", "sess", 2], ["agent-b2", "sess2", 1]], timeout=5,
                 what="both subagent files, each with its parent")

    def test_burst_of_1000_appends_across_50_files_is_ingested_exactly_once(
        self, csmd: Csmd, projects: Path, tmp_path: Path,
    ) -> None:
        configure(tmp_path, NO_RESCAN)
        csmd.start()
        files = [projects / f"proj{i % 5}" / f"b{i}.jsonl" for i in range(50)]
        for n in range(20):
            for i, f in enumerate(files):
                append(f, line(n, f"b{i}"))  # open, append one line, close: 1,000 separate writes
        wait_for(lambda: count() >= 1000, timeout=20, what="1,000 lines")
        run_csm("sync", "--now")
        assert rows("SELECT uuid, count(*) AS n FROM lines GROUP BY uuid HAVING n > 1") == [], "stored twice"
        assert count() == 1000
        assert {r[0] for r in rows("SELECT uuid FROM lines")} == {f"b{i}-u{n}" for i in range(50) for n in range(20)}
        assert rows("SELECT count(*) FROM sync_errors") == [[0]]
        assert rows("SELECT sum(lines) FROM sessions") == [[1000]]


class TestRoots:
    def test_a_root_made_after_start_is_watched_from_the_next_rescan(self, csmd: Csmd, tmp_path: Path) -> None:
        """A missing root is looked for at each rescan (every second here, 60 s by default): the
        rescan that finds it ingests its files and the watch starts then; the same when it
        is deleted and made again."""
        configure(tmp_path, "rescan_interval_s = 1\n")
        late = tmp_path / "late" / "projects"
        csmd.args = ["--root", str(late)]
        csmd.start()
        pid = csmd.proc.pid
        assert inotify_watches(pid) == 0
        for n in range(2):
            append(late / "p" / "s.jsonl", line(n, "late"))
            wait_for(lambda n=n: count() == n + 1, timeout=5, what="a line in a root that appeared")
            wait_for(lambda: inotify_watches(pid) >= 2, timeout=5, what="watches on the root and its folder")
            shutil.rmtree(late)
            wait_for(lambda: inotify_watches(pid) == 0, timeout=5, what="the watch of a deleted root to go")
        wait_for(lambda: "is gone; it is watched again once it exists" in csmd.log(), timeout=5,
                 what="the rescan noticing the deleted root")
        assert count() == 2


class TestOwnFilesAndIdle:
    def test_own_files_are_never_read_and_reads_do_not_wake_csmd(
        self, csmd: Csmd, projects: Path, tmp_path: Path,
    ) -> None:
        """csm's database and log inside a root, named ``*.jsonl`` so that nothing but the exclusion
        keeps them out; then idle CPU after a burst: a feedback loop (csm's own reads or
        writes waking it) would burn a core, an idle csmd costs a tick or two at most."""
        configure(tmp_path, NO_RESCAN)
        own_db = projects / "csm-data" / "archive.jsonl"
        csmd.log_path = projects / "logs" / "csmd.jsonl"
        csmd.log_path.parent.mkdir()
        csmd.args = ["--db", str(own_db), "--log-level", "debug"]
        csmd.start()
        for n in range(10):
            for i in range(20):
                append(projects / "p" / f"s{i}.jsonl", line(n, f"s{i}"))
        wait_for(lambda: count() == 200, timeout=10, what="200 lines")
        csm_json("sync", "--now")
        assert count() == 200
        files = [r[0] for r in db_rows(own_db, "SELECT file_path FROM sync_metadata")]
        assert sorted(files) == sorted(str(projects / "p" / f"s{i}.jsonl") for i in range(20))
        assert rows("SELECT count(*) FROM sync_errors") == [[0]]

        pid = csmd.proc.pid
        time.sleep(0.3)  # let the last replies and atime events settle before the window
        before = cpu_ticks(pid)
        time.sleep(2.0)  # the measurement window itself, not a wait for a condition
        used = cpu_ticks(pid) - before
        hz = os.sysconf("SC_CLK_TCK")
        assert used <= 2, f"idle csmd used {used} ticks ({used / hz * 1000:.0f} ms) in 2 s"


class TestRecovery:
    def test_observer_killed_or_stopped_is_restarted(self, csmd: Csmd, projects: Path, tmp_path: Path) -> None:
        """The observer dies from outside through the ``Fault`` request (honoured only with
        ``CSM_TEST_HOOKS=1``): ``kill-watcher`` makes its dispatch thread raise, as watchdog's
        does when a handler raises; ``stop-watcher`` stops it without a word. The check before
        each rescan (every second here) must restart it, and lines written meanwhile arrive."""
        configure(tmp_path, "rescan_interval_s = 1\n")
        csmd.env = {"CSM_TEST_HOOKS": "1"}
        f = projects / "p" / "s1.jsonl"
        append(f, line(0))
        csmd.start()
        pid = csmd.proc.pid
        assert inotify_watches(pid) >= 2
        for n, action in enumerate(("kill-watcher", "stop-watcher"), 1):
            reply = request(protocol.Fault(action=action))
            assert isinstance(reply, protocol.Ok), reply
            append(f, line(n))
            wait_for(lambda n=n: status().watcher_restarts == n, timeout=10, what=f"restart after {action}")
            wait_for(lambda n=n: count() == n + 1, timeout=5, what=f"the line written around {action}")
            assert inotify_watches(pid) >= 2, "the new observer must watch again"
        log = csmd.log()
        assert "thread csm-watch died: FaultInjected" in log
        assert log.count("file watcher stopped; restarting it") == 2
        assert csm_json("status")["watch_mode"] == "watching"  # the CLI's JSON has every field
        append(projects / "q" / "s9.jsonl", line(0, "s9"))
        wait_for(lambda: count("session_id = 's9'") == 1, timeout=5, what="a new folder after the restarts")

    def test_an_inotify_queue_overflow_triggers_a_rescan(self, csmd: Csmd, projects: Path, tmp_path: Path) -> None:
        """csmd is stopped (SIGSTOP) while more events than the kernel queues
        (``fs.inotify.max_queued_events``) happen; the last file's events are lost. watchdog
        only logs the overflow; the rescan it must trigger finds that file long before the
        hour-long rescan interval would."""
        configure(tmp_path, NO_RESCAN)
        a, b, lost = (projects / "p" / f"{n}.jsonl" for n in ("a", "b", "lost"))
        append(a, line(0, "a"))
        append(b, line(0, "b"))
        csmd.start()
        queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        csmd.proc.send_signal(signal.SIGSTOP)
        try:
            with open(a, "ab") as fa, open(b, "ab") as fb:
                for n in range(1, queued + 1000):  # alternate, so the kernel merges no two events
                    (fa if n % 2 else fb).write(line(n, "a" if n % 2 else "b"))
                    (fa if n % 2 else fb).flush()
            append(lost, line(0, "lost"))
        finally:
            csmd.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: count("session_id = 'lost'") == 1, timeout=10, what="the file whose events were lost")
        assert "Inotify queue overflowed" in csmd.log()

    def test_faults_are_refused_without_the_test_switch(self, csmd: Csmd) -> None:
        csmd.start()
        with pytest.raises(Exception, match="CSM_TEST_HOOKS"):
            request(protocol.Fault(action="kill-watcher"))
        assert csm_json("status")["watcher_restarts"] == 0
        assert status().watch_mode == "watching"

    @pytest.mark.parametrize("how", ["--no-watch", "watch = false"])
    def test_watching_disabled_still_ingests_by_polling(self, csmd: Csmd, projects: Path, tmp_path: Path,
                                                         how: str) -> None:
        configure(tmp_path, "poll_interval_s = 0.3\n" + (how if "=" in how else ""))
        if how.startswith("--"):
            csmd.args = [how]
        csmd.start()
        assert status().watch_mode == "polling every 0.3 s: watching disabled"
        assert inotify_watches(csmd.proc.pid) == 0
        append(projects / "p" / "s1.jsonl", line(0) + line(1))
        wait_for(lambda: count() == 2, timeout=5, what="lines found by polling")
        assert "polling" in run_csm("status").stdout


def _unshare_works() -> bool:
    try:
        return shutil.which("nsenter") is not None and subprocess.run(
            ["unshare", "-U", "-r", "sh", "-c", "echo 1 > /proc/sys/user/max_inotify_watches"],
            capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs user namespaces (unshare -U -r, nsenter) to set inotify limits")
class TestInotifyLimits:
    """Real inotify limits, lowered for csmd alone.

    In a new user namespace ``/proc/sys/user/max_inotify_{watches,instances}`` are that
    namespace's own limits, writable without privileges and invisible to the rest of the
    machine, so csmd meets a real ENOSPC / EMFILE from the kernel (the global
    ``fs.inotify`` limits are left alone). ``nsenter`` raises them again from outside.
    """

    @pytest.mark.parametrize("knob,value,expect", [
        ("max_inotify_watches", 0, "inotify watch limit reached"),   # the root's own watch refused
        ("max_inotify_watches", 3, "folders not watched"),           # sub-folders refused (watchdog is silent)
        ("max_inotify_instances", 0, "inotify instance limit reached"),
    ])
    def test_limits_fall_back_to_polling(self, csmd: Csmd, projects: Path, tmp_path: Path, knob: str, value: int,
                                         expect: str) -> None:
        configure(tmp_path, "poll_interval_s = 0.3\n" + NO_RESCAN)
        for p in "abcd":
            append(projects / p / "s.jsonl", line(0, f"s{p}"))
            (projects / p / "s" / "subagents").mkdir(parents=True)
        csmd.prefix = ["unshare", "-U", "-r", "sh", "-c", f'echo {value} > /proc/sys/user/{knob} && exec "$@"', "sh"]
        csmd.start()
        mode = status().watch_mode
        assert mode.startswith("polling every 0.3 s: ") and expect in mode, mode
        assert "polling" in run_csm("status").stdout
        append(projects / "d" / "s" / "subagents" / "agent-x.jsonl", line(1, "sd"))
        append(projects / "d" / "s.jsonl", line(2, "sd"))
        wait_for(lambda: count("session_id = 'sd'") == 3, timeout=5, what="lines found by polling")
        ask(protocol.Sync())
        ask(protocol.Sync())
        assert csmd.log().count("falling back to polling rescans") == 1, csmd.log()

        # Room again (the namespace's limit raised from outside): csmd watches every folder again.
        subprocess.run(["nsenter", "-U", "-t", str(csmd.proc.pid), "sh", "-c",
                        f"echo 1000 > /proc/sys/user/{knob}"], check=True, timeout=10)
        wait_for(lambda: status().watch_mode == "watching", timeout=5, what="watching again")
        assert inotify_watches(csmd.proc.pid) == 1 + 3 * 4, "the root, and p, p/s, p/s/subagents for each p"
        assert "inotify has room again" in csmd.log()

    def test_a_new_folder_refused_later_is_noticed_at_once(self, csmd: Csmd, projects: Path, tmp_path: Path) -> None:
        """Room for the root, ``p`` and one more folder: ``q`` gets the last watch, ``r`` is refused
        (watchdog says nothing); the check that follows new folders finds it, no rescan needed."""
        configure(tmp_path, "poll_interval_s = 0.3\n" + NO_RESCAN)
        append(projects / "p" / "s.jsonl", line(0, "sp"))
        csmd.prefix = ["unshare", "-U", "-r", "sh", "-c", 'echo 3 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh"]
        csmd.start()
        append(projects / "q" / "s.jsonl", line(0, "sq"))
        wait_for(lambda: count("session_id = 'sq'") == 1, timeout=5, what="a line in the last folder with room")
        assert status().watch_mode == "watching"
        (projects / "r").mkdir()
        wait_for(lambda: "folders not watched" in status().watch_mode, timeout=5, what="the refused folder noticed")
        assert "e.g. " + str(projects / "r") in status().watch_mode
        append(projects / "r" / "s.jsonl", line(0, "sr"))
        wait_for(lambda: count("session_id = 'sr'") == 1, timeout=5, what="a line in the refused folder, by polling")

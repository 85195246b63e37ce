"""``csm service``: the rendered unit and plist by content, systemd-analyze on the unit, and the real
commands' behaviour here (systemd is installed but no user manager runs in this container)."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from csm.client import service, units
from csm.shared import paths
from csmtest import Csmd, run_csm, wait_for

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEMCTL = shutil.which("systemctl")
CSMD = str(Path(sys.executable).parent / "csmd")


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify``: needs only an existing XDG_RUNTIME_DIR (the isolated one)."""
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed here: the unit is checked by content only")
    return subprocess.run([SYSTEMD_ANALYZE, "--user", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)


def unit_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def no_bus_env() -> dict[str, str]:
    """The test's environment, with systemctl and journalctl out of reach."""
    return {**os.environ, "PATH": "/nonexistent"}


class TestSystemdUnit:
    def test_rendered_unit_verifies_and_says_what_it_must(self, tmp_path: Path) -> None:
        r = run_csm("service", "print", "--systemd")
        assert r.returncode == 0, r.stderr
        unit = tmp_path / "csm.service"
        unit.write_text(r.stdout)
        v = verify(unit)
        assert v.returncode == 0 and v.stdout == "" and v.stderr == "", v.stderr  # warnings count as failures
        lines = unit_lines(r.stdout)
        assert lines.index("[Unit]") < lines.index("[Service]") < lines.index("[Install]")
        for directive in ("Type=notify", f"ExecStart={CSMD}", "Restart=on-failure", "WatchdogSec=60",
                          "Nice=10", "IOSchedulingClass=idle", "NoNewPrivileges=yes", "WantedBy=default.target",
                          f"Environment=CLAUDE_CONFIG_DIR={tmp_path / 'claude'}",
                          f"Environment=XDG_DATA_HOME={tmp_path / 'data'}"):
            assert directive in lines, directive
        keys = {ln.split("=", 1)[0] for ln in lines if "=" in ln}
        assert not keys & {"PrivateTmp", "ProtectHome", "ProtectSystem", "PrivateDevices", "PrivateUsers",
                           "PrivateNetwork", "MemoryDenyWriteExecute"}, "these break or are skipped in user units"
        assert not any(ln.startswith("Environment=XDG_RUNTIME_DIR") for ln in lines), "the user manager sets it"

    def test_odd_paths_and_values_are_quoted_so_systemd_reads_them_back(self, tmp_path: Path) -> None:
        odd = tmp_path / "a venv with 100% $HOME"
        odd.mkdir()
        (odd / "csmd").symlink_to(CSMD)
        text = units.render_systemd([str(odd / "csmd"), "--root", "/r/$x"], {"CLAUDE_CONFIG_DIR": 'x "y" 50%\\z'})
        assert 'ExecStart="' + str(odd).replace("%", "%%") + '/csmd" --root /r/$$x\n' in text
        assert 'Environment="CLAUDE_CONFIG_DIR=x \\"y\\" 50%%\\\\z"' in text
        unit = tmp_path / "csm.service"
        unit.write_text(text)
        v = verify(unit)  # it checks that ExecStart names an executable: the quoting round-trips
        assert v.returncode == 0 and v.stderr == "", v.stderr

    def test_verify_catches_a_broken_unit(self, tmp_path: Path) -> None:
        """The check above can fail: a command that is not there is reported."""
        unit = tmp_path / "csm.service"
        unit.write_text(units.render_systemd([str(tmp_path / "missing" / "csmd")], {}))
        v = verify(unit)
        assert v.returncode != 0 and "is not executable" in v.stderr

    def test_without_claude_config_dir_no_environment_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in paths.PATH_VARIABLES:
            monkeypatch.delenv(name)
        text = units.render("systemd")
        assert not [ln for ln in unit_lines(text) if ln.startswith("Environment=")]
        assert f"ExecStart={CSMD}\nRestart=on-failure" in text


class TestLaunchdPlist:
    def test_every_key(self, tmp_path: Path) -> None:
        r = run_csm("service", "print", "--launchd")
        assert r.returncode == 0, r.stderr
        plist = plistlib.loads(r.stdout.encode())
        log = str(tmp_path / "home" / "Library" / "Logs" / "csm" / "csmd.log")
        assert plist == {
            "Label": paths.LAUNCHD_LABEL,
            "ProgramArguments": [CSMD],
            "EnvironmentVariables": {
                "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
                "XDG_CONFIG_HOME": str(tmp_path / "config"),
                "XDG_DATA_HOME": str(tmp_path / "data"),
                "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"],
                "XDG_STATE_HOME": str(tmp_path / "state"),
            },
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ThrottleInterval": 10,
            "ProcessType": "Background",
            "LowPriorityIO": True,
            "StandardOutPath": log,
            "StandardErrorPath": log,
        }

    def test_install_and_uninstall_steps(self, tmp_path: Path) -> None:
        m = service.Launchd()
        plist = tmp_path / "home" / "Library" / "LaunchAgents" / f"{paths.LAUNCHD_LABEL}.plist"
        target = f"gui/{os.getuid()}/{paths.LAUNCHD_LABEL}"
        assert m.install_steps() == [
            service.MakeDir(tmp_path / "home" / "Library" / "Logs" / "csm"),
            service.Write(plist, units.render("launchd")),
            service.Run(["launchctl", "bootout", target], may_fail=True),
            service.Run(["launchctl", "enable", target]),
            service.Run(["launchctl", "bootstrap", f"gui/{os.getuid()}", str(plist)]),
        ]
        assert m.uninstall_steps(reachable=True) == [service.Run(["launchctl", "bootout", target], may_fail=True),
                                                     service.Remove(plist)]


class TestCommandsHere:
    """This container has systemctl but no user manager: every command says so in one line."""

    def unit(self, tmp_path: Path) -> Path:
        return tmp_path / "config" / "systemd" / "user" / "csm.service"

    def test_dry_run_prints_the_file_and_commands_and_changes_nothing(self, tmp_path: Path) -> None:
        r = run_csm("service", "install", "--dry-run")
        assert r.returncode == 0, r.stderr
        unit = self.unit(tmp_path)
        printed = run_csm("service", "print").stdout
        assert r.stdout == (f"would write {unit}:\n{printed}\n"
                            "would run: systemctl --user daemon-reload\n"
                            "would run: systemctl --user enable csm.service\n"
                            "would run: systemctl --user reset-failed csm.service  (a failure is ignored)\n"
                            "would run: systemctl --user restart csm.service\n")
        assert not unit.exists() and not (tmp_path / "config" / "systemd").exists()
        if SYSTEMCTL:
            assert r.stderr.startswith("csm: note: no systemd user manager reachable here") and \
                r.stderr.count("\n") == 1, r.stderr

    def test_dry_run_warns_of_a_csmd_running_outside_the_service(self, csmd: Csmd) -> None:
        csmd.start()
        r = run_csm("service", "install", "--dry-run")
        assert r.returncode == 0
        assert f"csmd is running outside the service (pid {csmd.proc.pid})" in r.stderr  # type: ignore[union-attr]

    @pytest.mark.parametrize("reach", ["no bus", "no systemctl"])
    def test_install_without_a_manager_is_one_line_and_writes_nothing(self, tmp_path: Path, reach: str) -> None:
        if reach == "no bus" and SYSTEMCTL is None:
            pytest.skip("systemctl is not installed here")
        r = run_csm("service", "install", env=no_bus_env() if reach == "no systemctl" else None)
        assert r.returncode == 69
        assert r.stdout == "" and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith("csm: no systemd user manager reachable here (systemctl --user: ")
        assert "run 'csmd' directly" in r.stderr
        assert ("command not found" in r.stderr) == (reach == "no systemctl")
        assert not self.unit(tmp_path).exists()

    def test_status_says_what_it_can(self, tmp_path: Path, csmd: Csmd) -> None:
        r = run_csm("service", "status")
        assert r.returncode == 0, r.stderr
        rows = dict(ln.split(None, 1) for ln in r.stdout.splitlines())
        assert rows["installed"] == "no" and rows["enabled"] == "no" and rows["csmd"] == "not answering"
        assert rows["manager"].startswith("not reachable (") and rows["manager"].endswith("run 'csmd' directly")
        csmd.start()
        st = json.loads(run_csm("service", "status", "--json").stdout)
        assert st["manager"] == "systemd" and st["file"] == str(self.unit(tmp_path)) and st["installed"] is False
        assert st["daemon"]["pid"] == csmd.proc.pid  # type: ignore[union-attr]
        assert st["running"] is None and st["manager_problem"]

    def test_real_file_written_then_uninstalled_with_its_enable_link(self, tmp_path: Path) -> None:
        if SYSTEMCTL is None:
            pytest.skip("systemctl is not installed here")
        m = service.Systemd()
        service._apply(m.install_steps()[:1])  # the Write step alone: the manager steps cannot run here
        unit = self.unit(tmp_path)
        assert unit.read_text() == run_csm("service", "print").stdout
        assert stat.S_IMODE(unit.stat().st_mode) == 0o644
        service._apply(m.install_steps()[:1])  # again: replaced in place, no temp file left
        assert sorted(p.name for p in unit.parent.iterdir()) == ["csm.service"]
        # systemctl enables without a manager (it only makes a symlink); uninstall must undo that too
        subprocess.run(["systemctl", "--user", "enable", "csm.service"], check=True, capture_output=True)
        link = unit.parent / "default.target.wants" / "csm.service"
        assert link.is_symlink()
        status = run_csm("service", "status").stdout
        assert "installed  yes\n" in status and "enabled    yes\n" in status
        r = run_csm("service", "uninstall")
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"uninstalled: removed {unit}; the archive is kept\n"
        assert r.stderr.startswith("csm: note: nothing was stopped: no systemd user manager reachable here")
        assert not unit.exists() and not link.is_symlink()
        assert run_csm("service", "uninstall").stdout == f"not installed (no {unit})\n"

    def test_logs(self) -> None:
        r = run_csm("service", "logs", "-n", "5", env=no_bus_env())
        assert r.returncode == 69 and r.stderr.count("\n") == 1
        assert "journalctl: command not found" in r.stderr and "run 'csmd' directly" in r.stderr
        if shutil.which("journalctl"):
            r = run_csm("service", "logs", "-n", "5")
            assert r.returncode == 0 and "Traceback" not in r.stderr


CSM = str(Path(sys.executable).parent / "csm")


class TestWeb:
    """``--web``: csm serve as a login service of its own, and how its user gets the page's URL."""

    def test_the_page_unit_verifies_and_runs_csm_serve_after_csmd(self, tmp_path: Path) -> None:
        r = run_csm("service", "print", "--systemd", "--web")
        assert r.returncode == 0, r.stderr
        unit = tmp_path / "csm-web.service"
        unit.write_text(r.stdout)
        v = verify(unit)
        assert v.returncode == 0 and v.stdout == "" and v.stderr == "", v.stderr
        lines = unit_lines(r.stdout)
        for directive in (f"ExecStart={CSM} serve", "After=csm.service", "Restart=on-failure",
                          "WantedBy=default.target", f"Environment=XDG_CONFIG_HOME={tmp_path / 'config'}"):
            assert directive in lines, directive
        assert not any(ln.startswith(("Type=notify", "WatchdogSec")) for ln in lines), "serve sends no sd_notify"

    def test_the_page_agent_plist(self, tmp_path: Path) -> None:
        plist = plistlib.loads(run_csm("service", "print", "--launchd", "--web").stdout.encode())
        log = str(tmp_path / "home" / "Library" / "Logs" / "csm" / "serve.log")
        assert plist["Label"] == paths.LAUNCHD_WEB_LABEL and plist["ProgramArguments"] == [CSM, "serve"]
        assert plist["StandardOutPath"] == plist["StandardErrorPath"] == log
        assert plist["EnvironmentVariables"]["XDG_RUNTIME_DIR"] == os.environ["XDG_RUNTIME_DIR"]
        assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
        m = service.Launchd(web=True)
        agent = tmp_path / "home" / "Library" / "LaunchAgents" / f"{paths.LAUNCHD_WEB_LABEL}.plist"
        assert m.install_steps()[1] == service.Write(agent, units.render("launchd", web=True))

    def test_install_web_dry_run_adds_the_page_unit_and_uninstall_removes_both(self, tmp_path: Path) -> None:
        plain = run_csm("service", "install", "--dry-run").stdout
        r = run_csm("service", "install", "--web", "--dry-run")
        assert r.returncode == 0, r.stderr
        web_unit = tmp_path / "config" / "systemd" / "user" / "csm-web.service"
        printed = run_csm("service", "print", "--web").stdout
        assert r.stdout == plain + (f"would write {web_unit}:\n{printed}\n"
                                    "would run: systemctl --user daemon-reload\n"
                                    "would run: systemctl --user enable csm-web.service\n"
                                    "would run: systemctl --user reset-failed csm-web.service  (a failure is ignored)\n"
                                    "would run: systemctl --user restart csm-web.service\n")
        assert not web_unit.exists()
        for m in (service.Systemd(), service.Systemd(web=True)):
            service._apply(m.install_steps()[:1])
        assert "web        systemd user unit" in run_csm("service", "status").stdout
        u = run_csm("service", "uninstall", "--dry-run").stdout
        assert f"would remove {web_unit}\n" in u and f"would remove {web_unit.with_name('csm.service')}\n" in u
        assert u.index("csm-web.service") < u.index("disable csm.service"), "the page goes first"

    def test_serve_listens_on_the_web_port_setting_and_url_prints_its_address(self, tmp_path: Path) -> None:
        import socket

        with socket.socket() as s:  # a port free now, as the setting
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        assert run_csm("config", "set", "web_port", str(port)).returncode == 0
        gone = run_csm("serve", "--url")
        assert gone.returncode == 3 and gone.stdout == "" and gone.stderr.count("\n") == 1, gone.stderr
        assert "csm serve is not running" in gone.stderr and "csm service install --web" in gone.stderr
        out = tmp_path / "serve.out"
        with open(out, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "csm.client", "serve"], stdout=f, stderr=subprocess.STDOUT)
        try:
            file = paths.serve_url_path()
            url = wait_for(lambda: file.exists() and file.read_text().strip(), 20, "the URL file")
            assert url.startswith(f"http://127.0.0.1:{port}/?token=") and url in out.read_text()
            assert stat.S_IMODE(file.stat().st_mode) == 0o600
            r = run_csm("serve", "--url")
            assert r.returncode == 0 and r.stdout == url + "\n", r.stderr
            import http.client

            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", url.split(str(port), 1)[1])
            assert c.getresponse().status == 303  # the token is this run's: it becomes the cookie
            twice = run_csm("serve")
            assert twice.returncode == 1 and "is csm serve running already? 'csm serve --url' says" in twice.stderr
            assert file.read_text().strip() == url, "a server that could not start leaves the address alone"
        finally:
            proc.terminate()
            assert proc.wait(15) == 0
        assert not file.exists(), "a stopped server leaves no address behind"
        assert "Traceback" not in out.read_text()

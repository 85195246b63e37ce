"""``csm service``: run csmd at login under the user's own service manager.

Linux gets a systemd user unit (``Type=notify``: csmd says when it is ready and pings
the watchdog), macOS a launchd agent; both are rendered by ``csm.client.units``. Each
command is first turned into a list of steps (files to write or remove, commands to
run), which ``--dry-run`` prints and a real run applies, so the two cannot differ.
Every external command goes through ``_run``; a missing command or an unreachable
manager becomes one line telling the user to run ``csmd`` directly.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import click
import msgspec

from csm.client import render
from csm.client.transport import request
from csm.shared import paths, protocol
from csm.shared.errors import DaemonNotRunning, ServiceError, ServiceManagerMissing

QUERY_TIMEOUT_S = 30.0


class Write(NamedTuple):
    path: Path
    text: str


class MakeDir(NamedTuple):
    path: Path


class Remove(NamedTuple):
    path: Path


class Run(NamedTuple):
    argv: list[str]
    may_fail: bool = False  # e.g. unloading a job that is not loaded


Step = Write | MakeDir | Remove | Run


class State(NamedTuple):
    """What the manager says of csm's service; None where it cannot tell."""

    enabled: bool | None
    running: bool | None
    detail: str | None
    pid: int | None


class ServiceStatus(msgspec.Struct, kw_only=True):
    manager: str
    file: str
    installed: bool
    manager_problem: str | None
    enabled: bool | None
    running: bool | None
    state: str | None
    pid: int | None
    web_file: str
    web_installed: bool
    daemon: protocol.StatusReply | None


def _run(argv: list[str], capture: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """The one place csm runs another program; a missing program is exit status 127, as in a shell."""
    try:
        return subprocess.run(argv, capture_output=capture, text=True, timeout=timeout)
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        raise ServiceError(f"'{shlex.join(argv)}' did not finish within {timeout:g} s") from None


def _render(manager: str, web: bool = False) -> str:
    from csm.client import units  # here, so that other commands do not pay for importlib.resources and plistlib

    return units.render(manager, web)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "no message"


class Systemd:
    """csmd's unit, or with ``web`` the one of ``csm serve``: the same steps for either."""

    name = "systemd"
    kind = "systemd user unit"
    manager = "systemd user manager"

    def __init__(self, web: bool = False) -> None:
        self.web = web
        self.unit = paths.SYSTEMD_WEB_UNIT if web else paths.SYSTEMD_UNIT
        self.path = paths.systemd_unit_path(self.unit)

    @staticmethod
    def systemctl(*args: str) -> list[str]:
        return ["systemctl", "--user", *args]

    def problem(self) -> str | None:
        """Why the user manager cannot be used from here, or None."""
        r = _run(self.systemctl("show", "--property=Version"), timeout=QUERY_TIMEOUT_S)
        return None if r.returncode == 0 else f"systemctl --user: {_one_line(r.stderr)}"

    def render(self) -> str:
        return _render(self.name, self.web)

    def install_steps(self) -> list[Step]:
        # reset-failed: a unit that hit its start limit refuses even a manual start until then.
        # restart, not start: it also starts a stopped unit, and makes a second install take the new file.
        return [Write(self.path, self.render()), Run(self.systemctl("daemon-reload")),
                Run(self.systemctl("enable", self.unit)),
                Run(self.systemctl("reset-failed", self.unit), may_fail=True),
                Run(self.systemctl("restart", self.unit))]

    def uninstall_steps(self, reachable: bool) -> list[Step]:
        # enable/disable only move symlinks, so disabling works without a reachable manager
        if not reachable:
            return [Run(self.systemctl("disable", self.unit), may_fail=True), Remove(self.path)]
        return [Run(self.systemctl("disable", "--now", self.unit)), Remove(self.path),
                Run(self.systemctl("daemon-reload"))]

    def state(self, reachable: bool) -> State:
        r = _run(self.systemctl("is-enabled", self.unit), timeout=QUERY_TIMEOUT_S)
        enabled = r.stdout.strip() == "enabled" if r.stdout.strip() else None
        if not reachable:
            return State(enabled, None, None, None)
        r = _run(self.systemctl("show", self.unit, "--property=ActiveState,SubState,MainPID"),
                 timeout=QUERY_TIMEOUT_S)
        props = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        active = props.get("ActiveState")
        pid = int(props.get("MainPID", "0") or 0) or None
        detail = f"{active} ({props.get('SubState', '?')})" if active else None
        return State(enabled, active == "active" if active else None, detail, pid)

    def logs_command(self, lines: int, follow: bool) -> list[str]:
        return ["journalctl", "--user", "-u", self.unit, "-n", str(lines), *(["-f"] if follow else [])]


class Launchd:
    name = "launchd"
    kind = "launchd agent"
    manager = "launchd GUI session"

    def __init__(self, web: bool = False) -> None:
        self.web = web
        label = paths.LAUNCHD_WEB_LABEL if web else paths.LAUNCHD_LABEL
        self.path = paths.launchd_plist_path(label)
        self.log = paths.launchd_log_path("serve" if web else "csmd")
        self.domain = f"gui/{os.getuid()}"
        self.target = f"{self.domain}/{label}"

    def problem(self) -> str | None:
        r = _run(["launchctl", "print", self.domain], timeout=QUERY_TIMEOUT_S)
        return None if r.returncode == 0 else f"launchctl print {self.domain}: {_one_line(r.stderr)}"

    def render(self) -> str:
        return _render(self.name, self.web)

    def install_steps(self) -> list[Step]:
        # bootout first: a loaded job keeps its old definition until it is booted out
        return [MakeDir(self.log.parent), Write(self.path, self.render()),
                Run(["launchctl", "bootout", self.target], may_fail=True),
                Run(["launchctl", "enable", self.target]),
                Run(["launchctl", "bootstrap", self.domain, str(self.path)])]

    def uninstall_steps(self, reachable: bool) -> list[Step]:
        boot_out = [Run(["launchctl", "bootout", self.target], may_fail=True)] if reachable else []
        return [*boot_out, Remove(self.path)]

    def state(self, reachable: bool) -> State:
        if not reachable:
            return State(None, None, None, None)
        r = _run(["launchctl", "print", self.target], timeout=QUERY_TIMEOUT_S)
        if r.returncode != 0:
            return State(False, False, "not loaded", None)
        state = re.search(r"^\s*state = (\S+)", r.stdout, re.M)
        pid = re.search(r"^\s*pid = (\d+)", r.stdout, re.M)
        detail = state.group(1) if state else None
        return State(True, detail == "running", detail, int(pid.group(1)) if pid else None)

    def logs_command(self, lines: int, follow: bool) -> list[str]:
        return ["tail", "-n", str(lines), *(["-F"] if follow else []), str(self.log)]


Manager = Systemd | Launchd


def manager_for(name: str, web: bool = False) -> Manager:
    return Systemd(web) if name == "systemd" else Launchd(web)


def this_os_manager() -> str:
    if sys.platform == "darwin":
        return "launchd"
    if sys.platform.startswith("linux"):
        return "systemd"
    raise ServiceError(f"csm knows no service manager on {sys.platform}; run 'csmd' directly instead")


def _missing(m: Manager, problem: str) -> ServiceManagerMissing:
    return ServiceManagerMissing(f"no {m.manager} reachable here ({problem}); run 'csmd' directly "
                                 f"instead (in a terminal, or from your login script)")


def _daemon() -> protocol.StatusReply | None:
    try:
        reply = request(protocol.Status(), timeout_s=2.0)
    except DaemonNotRunning:
        return None
    assert isinstance(reply, protocol.StatusReply)
    return reply


def _outside_pid(m: Manager, reachable: bool) -> int | None:
    """The pid of a csmd that answers but is not the service's own: it holds the archive's lock."""
    daemon = _daemon()
    if daemon is None or daemon.pid == m.state(reachable).pid:
        return None
    return daemon.pid


def _show(steps: list[Step]) -> None:
    for step in steps:
        match step:
            case Write(path, text):
                click.echo(f"would write {path}:")
                click.echo(text.rstrip("\n"))
                click.echo()
            case MakeDir(path):
                click.echo(f"would create {path}/")
            case Remove(path):
                click.echo(f"would remove {path}")
            case Run(argv, may_fail):
                click.echo(f"would run: {shlex.join(argv)}" + ("  (a failure is ignored)" if may_fail else ""))


def _apply(steps: list[Step]) -> None:
    for step in steps:
        match step:
            case Write(path, text):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.chmod(0o644)
                os.replace(tmp, path)
            case MakeDir(path):
                path.mkdir(parents=True, exist_ok=True)
            case Remove(path):
                path.unlink(missing_ok=True)
            case Run(argv, may_fail):
                r = _run(argv)
                if r.returncode != 0 and not may_fail:
                    raise ServiceError(f"'{shlex.join(argv)}' failed (exit {r.returncode}): {_one_line(r.stderr)}; "
                                       f"'csm service logs' may say why")


@click.group()
def service() -> None:
    """Run csmd at login: a systemd user unit (Linux) or a launchd agent (macOS).

    The service runs the csmd installed next to this csm, restarts it if it fails,
    and keeps it at low CPU and disk priority.

    \b
    Examples:
      csm service install --dry-run     # show the file and the commands, change nothing
      csm service install
      csm service status
      csm service logs -f
      csm service uninstall             # the archive is kept
    """


@service.command("install")
@click.option("--dry-run", is_flag=True, help="Print the file it would write and the commands it would run.")
@click.option("--web", is_flag=True, help="Also run 'csm serve' at login, on the web_port setting (8765).")
def service_install(dry_run: bool, web: bool) -> None:
    """Install csmd as a login service and start it (again, if it runs).

    Linux: ~/.config/systemd/user/csm.service, enabled and started with systemctl --user.
    macOS: ~/Library/LaunchAgents/dev.csm.csmd.plist, loaded with launchctl bootstrap.
    Installing again rewrites the file and restarts csmd. With --web, 'csm serve' gets a
    service of its own beside it (csm-web.service, dev.csm.serve.plist): the page is then at
    http://127.0.0.1:PORT/ after every login, and 'csm serve --url --open' opens it with its token.

    \b
    Examples:
      csm service install --dry-run
      csm service install --web
    """
    m = manager_for(this_os_manager())
    problem = m.problem()
    page = manager_for(m.name, web=True)
    steps = m.install_steps() + (page.install_steps() if web else [])
    outside = _outside_pid(m, problem is None)
    if dry_run:
        if problem:
            click.echo(f"csm: note: {_missing(m, problem)}", err=True)
        if outside:
            click.echo(f"csm: note: csmd is running outside the service (pid {outside}); stop it before "
                       "installing", err=True)
        _show(steps)
        return
    if problem:
        raise _missing(m, problem)
    if outside:
        raise ServiceError(f"csmd is already running outside the service (pid {outside}), and two cannot share "
                           f"the archive; stop it ('kill {outside}') and install again")
    _apply(steps)
    click.echo(f"installed the {m.kind} {m.path}; csmd runs now and at every login ('csm service status')")
    if web:
        click.echo(f"installed the {page.kind} {page.path}; 'csm serve --url --open' opens the page")


@service.command("uninstall")
@click.option("--dry-run", is_flag=True, help="Print what it would remove and run.")
def service_uninstall(dry_run: bool) -> None:
    """Stop csmd, and stop it starting at login. The archive is kept.

    \b
    Example:
      csm service uninstall
    """
    m = manager_for(this_os_manager())
    installed = [u for u in (manager_for(m.name, web=True), m) if u.path.exists()]  # the page first: it needs csmd
    if not installed:
        click.echo(f"not installed (no {m.path})")
        return
    problem = m.problem()
    steps = [step for u in installed for step in u.uninstall_steps(reachable=problem is None)]
    if dry_run:
        _show(steps)
        return
    _apply(steps)
    click.echo(f"uninstalled: removed {', '.join(str(u.path) for u in installed)}; the archive is kept")
    if problem:
        click.echo(f"csm: note: nothing was stopped: no {m.manager} reachable here ({problem})",
                   err=True)


@service.command("status")
@render.output_options
def service_status(fmt: str | None) -> None:
    """Say whether the service is installed, enabled and running, and what csmd says.

    \b
    Example:
      csm service status
    """
    m = manager_for(this_os_manager())
    problem = m.problem()
    installed = m.path.exists()
    st = m.state(problem is None) if installed else State(False, False if problem is None else None, None, None)
    daemon = _daemon()
    page = manager_for(m.name, web=True)
    s = ServiceStatus(manager=m.name, file=str(m.path), installed=installed, manager_problem=problem,
                      enabled=st.enabled, running=st.running, state=st.detail, pid=st.pid, web_file=str(page.path),
                      web_installed=page.path.exists(), daemon=daemon)
    if fmt is not None:
        render.emit_record(render.plain(s), fmt)
        return

    def yes_no(v: bool | None) -> str:
        return "unknown" if v is None else "yes" if v else "no"

    rows = [("service", f"{m.kind} {m.path}"), ("installed", yes_no(s.installed))]
    if problem:
        rows.append(("manager", f"not reachable ({problem}); run 'csmd' directly"))
    rows.append(("enabled", yes_no(s.enabled)))
    if not problem:
        pid = f", pid {s.pid}" if s.pid else ""
        rows.append(("running", yes_no(s.running) + (f" ({s.state}{pid})" if s.state else "")))
    if daemon is None:
        rows.append(("csmd", "not answering"))
    else:
        outside = " (outside the service)" if s.pid is not None and daemon.pid != s.pid else ""
        rows.append(("csmd", f"{daemon.version}, pid {daemon.pid}{outside}, {daemon.state}, "
                             f"{daemon.files} files, {daemon.events} lines"))
    rows.append(("web", f"{page.kind} {page.path} ('csm serve --url' prints the page)" if s.web_installed
                 else "not installed ('csm service install --web')"))
    for k, v in rows:
        click.echo(f"{k:<10} {v}")


@service.command("logs")
@click.option("-n", "--lines", type=click.IntRange(0), default=50, show_default=True, help="How many recent lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
def service_logs(lines: int, follow: bool) -> None:
    """Show csmd's log: the journal on Linux, ~/Library/Logs/csm/csmd.log on macOS.

    \b
    Examples:
      csm service logs
      csm service logs -f
    """
    m = manager_for(this_os_manager())
    argv = m.logs_command(lines, follow)
    r = _run(argv, capture=False)
    if r.returncode == 127:
        raise _missing(m, r.stderr)
    sys.exit(r.returncode)


@service.command("print")
@click.option("--systemd", "manager", flag_value="systemd", help="The systemd user unit.")
@click.option("--launchd", "manager", flag_value="launchd", help="The launchd agent plist.")
@click.option("--web", is_flag=True, help="The one of 'csm serve' (install --web) instead of csmd's.")
def service_print(manager: str | None, web: bool) -> None:
    """Print the unit or plist that install would write (default: this OS's manager).

    For review, and for packagers: it is rendered for the csm running it.

    \b
    Examples:
      csm service print
      csm service print --launchd > dev.csm.csmd.plist
      csm service print --web
    """
    click.echo(_render(manager or this_os_manager(), web), nl=False)

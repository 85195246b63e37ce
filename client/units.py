"""The service files csm installs, rendered from the templates shipped as package data.

The templates live in the repository's top-level ``systemd/`` and ``launchd/`` folders
(packages ``csm.systemd`` and ``csm.launchd`` once installed). Rendering fills in what
only install time knows: the absolute command that starts csmd, and the environment
that decides csmd's paths, written out because service managers do not read a user's
shell profile.
"""

from __future__ import annotations

import os
import plistlib
import string
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

from csm.shared import paths

MANAGERS = ("systemd", "launchd")


def service_environment(manager: str, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The path variables set now, to be set the same way for the service.

    Without them a service started at login could use another database (an
    ``XDG_DATA_HOME`` set in ``~/.profile``) or other transcripts (``CLAUDE_CONFIG_DIR``)
    than ``csmd`` run by hand. ``HOME`` is left out: both managers set it.
    ``XDG_RUNTIME_DIR`` is left out of the systemd unit: the user manager sets it to
    the login's ``/run/user/<uid>``, which is where the CLI looks too, whereas a value
    captured from a shell may be a temporary folder gone after a reboot. macOS has no
    such folder, so a user-set one is deliberate and goes into the agent.
    """
    names = [n for n in paths.PATH_VARIABLES if not (manager == "systemd" and n == "XDG_RUNTIME_DIR")]
    return {n: env[n] for n in names if env.get(n)}


def _template(package: str, name: str) -> str:
    return files(package).joinpath(name).read_text(encoding="utf-8")


def _systemd_word(word: str) -> str:
    """One word of a unit file value: ``%`` specifiers and ``$`` variables neutralised, quoted if needed."""
    word = word.replace("%", "%%")
    if word and not any(c in word for c in ' \t\n"\'\\;'):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def render_systemd(command: list[str], env: Mapping[str, str], unit: str = paths.SYSTEMD_UNIT) -> str:
    """A user unit (csmd's: ``Type=notify``, restart on failure, low priority; see the templates)."""
    # systemd expands $VARIABLES in the arguments but not in the program path
    exec_start = " ".join([_systemd_word(command[0]), *(_systemd_word(w).replace("$", "$$") for w in command[1:])])
    environment = "\n".join(f"Environment={_systemd_word(f'{k}={v}')}" for k, v in sorted(env.items()))
    template = _template("csm.systemd", unit)
    if not environment:
        template = template.replace("${environment}\n", "")
    return string.Template(template).substitute(exec_start=exec_start, environment=environment)


def render_launchd(command: list[str], env: Mapping[str, str], log: Path, label: str = paths.LAUNCHD_LABEL) -> str:
    """An agent plist: the template's keys, with the command, environment and log paths filled in."""
    plist = plistlib.loads(_template("csm.launchd", f"{label}.plist").encode())
    plist["ProgramArguments"] = list(command)
    plist["EnvironmentVariables"] = dict(sorted(env.items()))
    plist["StandardOutPath"] = plist["StandardErrorPath"] = str(log)
    return plistlib.dumps(plist, sort_keys=False).decode()


def render(manager: str, web: bool = False) -> str:
    """The file ``csm service install`` would write for ``manager``, from this environment: csmd's,
    or with ``web`` the one of ``csm serve`` (``--web``)."""
    env = service_environment(manager)
    if web:
        command = [*paths.csm_command(), "serve"]
        if manager == "systemd":
            return render_systemd(command, env, paths.SYSTEMD_WEB_UNIT)
        return render_launchd(command, env, paths.launchd_log_path("serve"), paths.LAUNCHD_WEB_LABEL)
    if manager == "systemd":
        return render_systemd(paths.csmd_command(), env)
    return render_launchd(paths.csmd_command(), env, paths.launchd_log_path())

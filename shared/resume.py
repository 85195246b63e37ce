"""The command that resumes a session in Claude Code, from any directory.

``claude --resume`` finds a session only under the project of the directory it runs in, so
the line csm prints changes to the session's working directory first. Both parts are quoted
for a POSIX shell (``shlex.quote``): a directory with spaces, quotes or ``$`` pastes safely.
"""

from __future__ import annotations

import shlex


def command(session_id: str, cwd: str | None) -> str:
    """``cd '<cwd>' && claude --resume <id>``; without a known cwd, just the resume."""
    resume = f"claude --resume {shlex.quote(session_id)}"
    return f"cd {shlex.quote(cwd)} && {resume}" if cwd else resume

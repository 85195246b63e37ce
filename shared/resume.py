"""The command that resumes a session in Claude Code, from any directory.

``claude --resume`` finds a session only under the project of the directory it runs in, so
the line csm prints changes to the session's working directory first. Both parts are quoted
for a POSIX shell (``shlex.quote``): a directory with spaces, quotes or ``$`` pastes safely.
"""

from __future__ import annotations

import shlex


def command(session_id: str, cwd: str | None) -> str:
    """``cd '<cwd>' && claude --resume <id>``; without a known cwd, just the resume.

    The folder is always in single quotes (shlex.quote leaves a plain path bare), so the line
    reads the same for every session.
    """
    resume = f"claude --resume {shlex.quote(session_id)}"
    if not cwd:
        return resume
    folder = shlex.quote(cwd)
    return f"cd {folder if folder.startswith(chr(39)) else chr(39) + cwd + chr(39)} && {resume}"

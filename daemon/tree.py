"""Where transcripts are: which paths are transcripts under a root, and what a path says about its session.

One place decides "is this a transcript", "under which root" and "is it a subagent's", for the
watcher (which paths hint), the rescan (which files it lists), a rename (whether the destination
is followed) and a file's checkpoint (its project, session and parent).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from csm.shared.paths import is_transcript_name

AGENT_PREFIX = "agent-"


class Tree:
    """The configured roots, less csm's own files (a database kept inside a root is never a transcript)."""

    def __init__(self, roots: list[Path], exclude: Iterable[Path] = ()) -> None:
        self.roots = roots
        self.exclude = {str(p) for p in exclude}

    def root_of(self, path: Path) -> Path | None:
        for root in self.roots:
            if path.is_relative_to(root):
                return root
        return None

    def is_transcript(self, path: str) -> bool:
        """A path csm reads as a transcript, by its name alone (the watcher asks before any ``stat``)."""
        return is_transcript_name(path) and path not in self.exclude

    def files(self, top: Path) -> Iterator[tuple[str, os.stat_result]]:
        """Every regular transcript under ``top``; symlinks are never followed."""
        stack = [str(top)]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(d)
            except OSError:
                continue
            with it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif self.is_transcript(entry.path) and entry.is_file(follow_symlinks=False):
                            yield entry.path, entry.stat(follow_symlinks=False)
                    except OSError:
                        continue


def describe(root: Path, path: Path) -> tuple[str, str, str | None]:
    """(project, session key, parent session) from where a file sits under its root.

    ``<project>/<session>.jsonl`` is a main session. ``<project>/<session>/subagents/
    agent-<id>.jsonl`` (at any depth below the session folder) is a subagent whose
    parent is the folder's session. The project is the folder name, an opaque key:
    Claude Code's encoding of the cwd into it cannot be reversed.
    """
    rel = path.relative_to(root).parts
    project = rel[0] if len(rel) > 1 else ""
    stem = path.stem
    if len(rel) <= 2:
        return project, stem, None
    parent = rel[1]
    key = stem if is_agent_key(stem) else f"{parent}/{'/'.join(rel[2:])[:-len('.jsonl')]}"
    return project, key, parent


def is_agent_key(session_key: str) -> bool:
    """A session key Claude Code gives a subagent's file (``agent-<id>``)."""
    return session_key.startswith(AGENT_PREFIX)


def is_subagent(session_key: str, parent_session: str | None) -> bool:
    """A subagent's file: one under a session's folder, or a flat ``agent-<id>.jsonl`` (Claude Code <= 2.0)."""
    return parent_session is not None or is_agent_key(session_key)

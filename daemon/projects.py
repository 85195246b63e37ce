"""The one ``--project`` rule: P keeps the projects whose folder name contains P, ignoring case.

A substring because that is what people type (``-p myrepo`` for ``-home-me-src-myrepo``);
ignoring case so ``-p users`` finds ``-Users-me-…``. ASCII case only, on both sides: SQLite's
``lower()`` folds ASCII alone, and ``matches`` folds the same way, so ``csm watch`` keeps exactly
the projects the queries keep (Claude Code writes folder names in ASCII anyway: every other
character of the path becomes ``-``).
"""

from __future__ import annotations


def sql(column: str) -> str:
    """The rule as an SQL condition on ``column``, with one ``?`` for the pattern."""
    return f"instr(lower({column}), lower(?)) > 0"


def matches(pattern: str, project: str) -> bool:
    """The rule in Python (bytes.lower() folds ASCII alone, as SQLite's lower() does)."""
    return pattern.encode().lower() in project.encode().lower()

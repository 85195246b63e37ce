"""Printing for people and for programs, and the terminal conventions around it.

Every command that prints rows or a record takes ``output_options``: one grammar of formats
(``--format table|json|jsonl|csv``, plus a command's own, such as ``prometheus`` for ``csm
status``; ``--json``, ``--jsonl`` and ``--csv`` are its short forms), ``--wide`` and
``--color``; commands with long output also ``--no-pager``. Each option is declared here once.
A reply becomes data through ``plain``, every field with its default, so the same reply has
the same keys in every command.

On a terminal, tables fit its width (``table``), colour follows ``--color``, ``FORCE_COLOR``,
``NO_COLOR`` and whether stdout is a terminal (``color``), and long output goes through the
user's pager (``paged``). Widths are display columns measured by wcwidth: a CJK character or
an emoji takes two, a combining mark none, so wide text neither overflows nor misaligns.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import click
import msgspec

FORMATS = ("table", "json", "jsonl", "csv")
F = TypeVar("F", bound=Callable[..., Any])
SHORT_ID = 8
"""Characters of a session id shown in a table on a terminal (``--wide``: all), as git shows commits."""
MIN_WIDTH = 10
"""A column cut to fit a terminal keeps at least this many display columns."""


@dataclass(frozen=True)
class Terminal:
    """What the terminal options decided for this command: ``wide`` tables, ``color``, may ``page``."""

    wide: bool = False
    color: bool = False
    page: bool = False


def terminal() -> Terminal:
    ctx = click.get_current_context(silent=True)
    found = ctx.meta.get("csm.terminal") if ctx else None
    return found if isinstance(found, Terminal) else Terminal(color=_color("auto"))


def color() -> bool:
    """Whether to print ANSI colour (``--color``, else ``FORCE_COLOR``, ``NO_COLOR``, a terminal)."""
    return terminal().color


def _color(choice: str) -> bool:
    """``always``/``never`` win; then FORCE_COLOR (force-color.org: any value but empty or "0"), then
    NO_COLOR (no-color.org: any non-empty value), then colour only on a terminal that is not dumb."""
    if choice != "auto":
        return choice == "always"
    force = os.environ.get("FORCE_COLOR", "")
    if force and force != "0":
        return True
    if os.environ.get("NO_COLOR") or force == "0":
        return False
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def terminal_options(*, wide: bool = True, colors: bool = True, paged: bool = False) -> Callable[[F], F]:
    """``--wide`` (tables), ``--color`` and ``--no-pager`` (long output), decided once per command and
    kept in click's context, where ``terminal()``, ``table`` and ``paged`` read them."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, color_choice: str = "auto", wide_table: bool = False, no_pager: bool = False,
                **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            t = Terminal(wide=wide_table, color=_color(color_choice), page=paged and not no_pager)
            ctx.meta["csm.terminal"] = t
            ctx.color = t.color  # click.echo keeps (or strips) ANSI codes by this
            return fn(*args, **kwargs)

        wrapped: Any = run
        if paged:
            wrapped = click.option("--no-pager", is_flag=True, help="Print straight to the terminal "
                                   "(default there: through $PAGER, else less -FRX).")(wrapped)
        if wide:
            wrapped = click.option("--wide", "wide_table", is_flag=True,
                                   help="Show every column whole, even wider than the terminal.")(wrapped)
        if colors:
            wrapped = click.option("--color", "color_choice", type=click.Choice(["auto", "always", "never"]),
                                   default="auto", show_default=True,
                                   help="Colour the output; auto: on a terminal, unless NO_COLOR is set "
                                        "(FORCE_COLOR turns it on).")(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate


@overload
def output_options(fn: F) -> F: ...
@overload
def output_options(*, formats: Sequence[str] = (), paged: bool = False) -> Callable[[F], F]: ...


def output_options(fn: F | None = None, *, formats: Sequence[str] = (), paged: bool = False) -> Any:
    """The one output grammar: ``--format`` (table, json, jsonl, csv and the command's own ``formats``),
    ``--json``/``--jsonl``/``--csv`` as its short forms, and the terminal options. The command gets
    ``fmt`` (None: the table for people). Used bare (``@output_options``) or with arguments."""

    def decorate(fn: F) -> F:
        choices = (*FORMATS, *formats)

        @functools.wraps(fn)
        def run(*args: Any, fmt: str | None, format_choice: str | None, **kwargs: Any) -> Any:
            if fmt and format_choice and fmt != format_choice:
                raise click.BadParameter(f"--{fmt} and --format {format_choice} ask for two formats; give one",
                                         param_hint="'--format'")
            chosen = format_choice or fmt
            return fn(*args, fmt=None if chosen == "table" else chosen, **kwargs)

        wrapped: Any = run
        for flag, help_ in reversed((
            ("json", "Output JSON (rows: an array of objects); short for --format json."),
            ("jsonl", "Output one JSON object per line; short for --format jsonl."),
            ("csv", "Output CSV with a header row; short for --format csv."),
        )):
            wrapped = click.option(f"--{flag}", "fmt", flag_value=flag, help=help_)(wrapped)
        wrapped = click.option("--format", "format_choice", type=click.Choice(choices), metavar="|".join(choices),
                               help="Output format (default: table, for people).")(wrapped)
        return terminal_options(paged=paged)(wrapped)  # type: ignore[no-any-return]

    return decorate(fn) if fn is not None else decorate


def _pager_command() -> list[str] | None:
    """``CSM_PAGER``, else ``PAGER``, else less; empty or ``cat`` means none (as git reads them)."""
    import shlex

    raw = os.environ.get("CSM_PAGER", os.environ.get("PAGER", "less"))
    try:
        cmd = shlex.split(raw)
    except ValueError:
        return None
    return None if not cmd or cmd == ["cat"] else cmd


@contextmanager
def paged(to_stdout: bool = True) -> Iterator[None]:
    """Send what is printed inside through the user's pager when stdout is a terminal (and is where the
    output goes: ``to_stdout``).

    As git does: ``LESS=FRX`` unless LESS is set (quit when it fits one screen, keep colours,
    leave the text on the screen), no pager for a pipe or with ``--no-pager``; a pager that
    cannot be started is skipped. Quitting the pager early ends the output quietly; Ctrl-C
    reaches both, and csm waits for the pager to give the terminal back before it exits.
    """
    cmd = _pager_command() if to_stdout and terminal().page and sys.stdout.isatty() else None
    if cmd is None:
        yield
        return
    import io
    import subprocess

    env = dict(os.environ)
    env.setdefault("LESS", "FRX")
    env.setdefault("LV", "-c")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env)
    except OSError:
        yield
        return
    assert proc.stdin is not None
    saved, sys.stdout = sys.stdout, io.TextIOWrapper(proc.stdin, encoding="utf-8", errors="replace")
    interrupted = False
    try:
        yield
    except BrokenPipeError:
        pass
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            sys.stdout.close()
        except BrokenPipeError:
            pass
        sys.stdout = saved
        while True:
            try:
                proc.wait()
                break
            except KeyboardInterrupt:
                interrupted = True
    if interrupted:
        sys.exit(130)


def plain(obj: Any) -> Any:
    """A reply as JSON-ready data: every field, defaults included (the wire omits them), no type tag."""
    if isinstance(obj, msgspec.Struct):
        return {f: plain(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


_CONTROL = {c: "\ufffd" for c in [*range(0x20), *range(0x7f, 0xa0)]}


def _cell(v: Any) -> str:
    """A value on one line; control characters shown as U+FFFD, so a transcript cannot drive the terminal."""
    if v is None:
        return ""
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, float):
        return f"{v:.6g}"
    return " ".join(v.split()).translate(_CONTROL) if isinstance(v, str) else str(v)


def _jsonable(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def emit_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str | None, header: bool = True) -> None:
    """Rows in ``fmt`` (None: a table); ``header=False`` continues a CSV stream (``csm watch``)."""
    out = sys.stdout
    if fmt == "json":
        json.dump([{c: _jsonable(v) for c, v in zip(columns, r)} for r in rows], out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "jsonl":
        for r in rows:
            out.write(json.dumps({c: _jsonable(v) for c, v in zip(columns, r)}, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        w = csv.writer(out)
        if header:
            w.writerow(columns)
        w.writerows([[_jsonable(v) for v in r] for r in rows])
    else:
        table(columns, rows)


def emit_record(record: dict[str, Any], fmt: str) -> None:
    """One record for a program (``fmt`` from ``output_options``); as CSV it is one row, nested values as JSON."""
    if fmt == "json":
        emit_json(record)
    elif fmt == "jsonl":
        click.echo(json.dumps(record, ensure_ascii=False))
    else:
        emit_rows(list(record), [[_flat(v) for v in record.values()]], fmt)


def _flat(v: Any) -> Any:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v


def short_id(session_id: str) -> str:
    """A session id as a table on a terminal shows it: its first 8 characters (after ``agent-``)."""
    if terminal().wide or not sys.stdout.isatty():
        return session_id
    head = "agent-" if session_id.startswith("agent-") else ""
    return head + session_id[len(head):][:SHORT_ID]


def _width(s: str) -> int:
    import wcwidth  # only for a table: the other output needs no widths

    return int(wcwidth.width(s))


def _fit(s: str, w: int, keep_end: bool) -> str:
    """``s`` in at most ``w`` display columns: cut with "…" at the end (or, ``keep_end``, at the start)."""
    if _width(s) <= w:
        return s
    import wcwidth

    if keep_end:
        n = _width(s)
        return "…" + str(wcwidth.clip(s, n - (w - 1), n, fillchar=""))
    return str(wcwidth.clip(s, 0, w - 1, fillchar="")) + "…"


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = (),
          shrink: Sequence[int] | None = None, keep_end: Sequence[int] = (), drop: Sequence[int] = ()) -> None:
    """Aligned columns (those in ``right`` to the right), measured in display columns.

    On a terminal, without ``--wide``, a table wider than the terminal is cut to fit: the columns
    in ``shrink`` give up room in that order, each down to ``MIN_WIDTH`` (None: the widest column
    first, any of them), so the columns that identify a row keep theirs; a cut cell ends in "…"
    (begins with it for columns in ``keep_end``, whose distinctive part is their end). If that is
    not enough, the columns in ``drop`` are left out, in that order. Elsewhere every cell is whole.
    """
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([_width(c)] + [_width(r[i]) for r in cells]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    if sys.stdout.isatty() and not terminal().wide:
        total = shutil.get_terminal_size().columns

        def excess() -> int:
            return sum(widths[i] for i in shown) + 2 * (len(shown) - 1) - total

        if shrink is None:
            while excess() > 0 and max(widths) > MIN_WIDTH:
                widths[widths.index(max(widths))] -= 1
        else:
            for i in shrink:
                widths[i] = max(min(widths[i], MIN_WIDTH), widths[i] - max(excess(), 0))
            for i in drop:
                if excess() > 0:
                    shown.remove(i)

    def line(vals: Sequence[str]) -> str:
        parts = {i: _fit(vals[i], widths[i], i in keep_end) for i in shown}
        return "  ".join(" " * (widths[i] - _width(parts[i])) + parts[i] if i in right
                         else parts[i] + " " * (widths[i] - _width(parts[i])) for i in shown).rstrip()

    click.echo(line(list(columns)))
    click.echo(line(["-" * w for w in widths]))
    for r in cells:
        click.echo(line(r))


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2))


_USAGE_HEADINGS = {"cache_creation_tokens": "cache_write", "cache_read_tokens": "cache_read",
                   "input_tokens": "input", "output_tokens": "output", "total_tokens": "total", "cost_usd": "cost"}


def _usd(cost: float | None, unpriced: int) -> str:
    if cost is None:
        return "unpriced*"
    return f"${cost:,.2f}" + ("*" if unpriced else "")


def usage_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A usage report for people: thousands separators, dollars, "*" on costs that leave tokens unpriced."""
    keys = columns.index("responses")
    cost_at, unpriced_at = columns.index("cost_usd"), columns.index("unpriced_tokens")
    shown = [c for c in columns if c != "unpriced_tokens"]

    def cells(r: Sequence[Any]) -> list[str]:
        out = [str(v) for v in r[:keys]]
        for i in range(keys, len(columns)):
            if i == cost_at:
                out.append(_usd(r[i], r[unpriced_at]))
            elif i != unpriced_at:
                out.append(f"{r[i]:,}")
        return out

    body = [cells(r) for r in rows]
    if len(rows) > 1:
        sums = [sum(r[i] or 0 for r in rows) for i in range(keys, len(columns))]
        unpriced = sums[unpriced_at - keys]
        all_unpriced = all(r[cost_at] is None for r in rows)
        total = ["Total"] + [""] * (keys - 1) + sums
        total[cost_at] = None if all_unpriced else sums[cost_at - keys]
        total[unpriced_at] = unpriced
        body.append(cells(total))
    table([_USAGE_HEADINGS.get(c, c) for c in shown], body, right=range(keys, len(shown)))

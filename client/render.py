"""Printing rows and records: a table (or a few aligned lines) for people, JSON, JSON lines or CSV for programs.

Every command that prints rows or a record takes ``output_options`` (``--json``, ``--jsonl``,
``--csv``) and prints through ``emit_rows`` or ``emit_record``; a reply becomes data through
``plain``, every field with its default, so the same reply has the same keys in every command.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import msgspec

FORMATS = ("table", "json", "jsonl", "csv")
F = TypeVar("F", bound=Callable[..., Any])


def output_options(fn: F) -> F:
    """``--json``, ``--jsonl`` and ``--csv``, handed to the command as ``fmt`` (None: the table for people)."""
    for flag, help_ in reversed((
        ("json", "Output JSON (rows: an array of objects)."),
        ("jsonl", "Output one JSON object per line."),
        ("csv", "Output CSV with a header row."),
    )):
        fn = click.option(f"--{flag}", "fmt", flag_value=flag, help=help_)(fn)
    return fn


def plain(obj: Any) -> Any:
    """A reply as JSON-ready data: every field, defaults included (the wire omits them), no type tag."""
    if isinstance(obj, msgspec.Struct):
        return {f: plain(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, float):
        return f"{v:.6g}"
    return " ".join(str(v).split()) if isinstance(v, str) else str(v)


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


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> None:
    """Aligned columns (those in ``right`` to the right); on a terminal, the widest are cut to fit."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    if sys.stdout.isatty():
        room = shutil.get_terminal_size().columns - 2 * (len(columns) - 1)
        while sum(widths) > room and max(widths) > 12:
            widths[widths.index(max(widths))] -= 1

    def line(vals: Sequence[str]) -> str:
        parts = [(v if len(v) <= w else v[: max(w - 1, 0)] + "…") for v, w in zip(vals, widths)]
        parts = [p.rjust(w) if i in right else p.ljust(w) for i, (p, w) in enumerate(zip(parts, widths))]
        return "  ".join(parts).rstrip()

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

#!/usr/bin/env python3
"""Rebuild csm's price table (shared/prices.json) from LiteLLM price files.

csm never fetches prices at run time; its table ships in the package, dated. To update it,
download LiteLLM's price file yourself and merge it in:

    curl -LO https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json
    python packaging/update_prices.py model_prices_and_context_window.json

(the same file ships inside the ``litellm`` wheel as ``litellm/model_prices_and_context_window_backup.json``).
Each file given is merged over the current table in order, model by model: a model a newer
file no longer lists keeps its last known price, because old transcripts still name it.
Only Anthropic's own entries (``litellm_provider == "anthropic"``, names ``claude-…``) are read.
Prices are stored per million tokens.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parents[1] / "shared" / "prices.json"
MILLION = 1_000_000
ONE_HOUR_FACTOR = 2.0
"""Anthropic bills 1-hour cache writes at twice the input price; used when a file lacks the field."""
FAST = {"claude-opus-4-6": 6.0, "claude-opus-4-7": 6.0, "claude-opus-4-8": 2.0}
"""``usage.speed == "fast"`` multipliers (Anthropic's fast-mode pricing; LiteLLM does not carry them)."""


def _per_million(v: Any) -> float | None:
    return round(float(v) * MILLION, 6) if isinstance(v, (int, float)) else None


def _entry(e: dict[str, Any]) -> dict[str, Any] | None:
    inp, out = _per_million(e.get("input_cost_per_token")), _per_million(e.get("output_cost_per_token"))
    if inp is None or out is None:
        return None
    price: dict[str, Any] = {
        "input": inp,
        "output": out,
        "cache_write_5m": _per_million(e.get("cache_creation_input_token_cost")) or round(inp * 1.25, 6),
        "cache_write_1h": _per_million(e.get("cache_creation_input_token_cost_above_1hr"))
        or round(inp * ONE_HOUR_FACTOR, 6),
        "cache_read": _per_million(e.get("cache_read_input_token_cost")) or round(inp * 0.1, 6),
    }
    hi_in = _per_million(e.get("input_cost_per_token_above_200k_tokens"))
    if hi_in is not None:
        price["above_200k"] = {
            "input": hi_in,
            "output": _per_million(e.get("output_cost_per_token_above_200k_tokens")) or out,
            "cache_write_5m": _per_million(e.get("cache_creation_input_token_cost_above_200k_tokens"))
            or round(hi_in * 1.25, 6),
            "cache_write_1h": _per_million(e.get("cache_creation_input_token_cost_above_1hr_above_200k_tokens"))
            or round(hi_in * ONE_HOUR_FACTOR, 6),
            "cache_read": _per_million(e.get("cache_read_input_token_cost_above_200k_tokens"))
            or round(hi_in * 0.1, 6),
        }
    return price


def merge(table: dict[str, Any], litellm: dict[str, Any]) -> int:
    """Merge one LiteLLM file into ``table``; returns how many models it set."""
    n = 0
    for name, e in litellm.items():
        if not isinstance(e, dict) or e.get("litellm_provider") != "anthropic" or not name.startswith("claude-"):
            continue
        price = _entry(e)
        if price is None:
            continue
        fast = next((v for k, v in FAST.items() if name.startswith(k)), None)
        if fast is not None:
            price["fast"] = fast
        table["models"][name] = price
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path, help="LiteLLM price JSON files, oldest first")
    ap.add_argument("--table", type=Path, default=TABLE, help="the table to update (default: %(default)s)")
    ap.add_argument("--fresh", action="store_true", help="start from an empty table instead of the current one")
    ap.add_argument("--date", default=datetime.date.today().isoformat(), help="the table's date (default: today)")
    args = ap.parse_args(argv)
    table: dict[str, Any] = {"models": {}}
    if not args.fresh and args.table.exists():
        table = json.loads(args.table.read_text())
    for f in args.files:
        n = merge(table, json.loads(f.read_text()))
        print(f"{f}: {n} Anthropic models", file=sys.stderr)
    table = {
        "updated": args.date,
        "source": "LiteLLM model_prices_and_context_window.json, merged by packaging/update_prices.py",
        "unit": "USD per million tokens",
        "models": dict(sorted(table["models"].items())),
    }
    args.table.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {args.table}: {len(table['models'])} models, dated {args.date}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

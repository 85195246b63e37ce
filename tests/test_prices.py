"""The price table: what a response costs, how stored costs follow a new table, how the table is rebuilt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from csm.daemon.batch import EventRow
from csm.daemon.parse import parse
from csm.daemon.prices import PriceTable, Tokens
from csm.daemon.store import FileRow, Store, open_writer
from csm.daemon.usage import REBUILD_SLOTS, UsageSink
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


def table(**models: dict[str, object]) -> PriceTable:
    return PriceTable(json.dumps({"updated": "2026-01-01", "source": "test", "unit": "USD per million tokens",
                                  "models": models}).encode())


SONNET = {"input": 3.0, "output": 15.0, "cache_write_5m": 3.75, "cache_write_1h": 6.0, "cache_read": 0.3,
          "above_200k": {"input": 6.0, "output": 22.5, "cache_write_5m": 7.5, "cache_write_1h": 12.0,
                         "cache_read": 0.6}}


class TestCost:
    def test_the_shipped_table_is_dated_and_prices_the_fixture_models(self) -> None:
        t = PriceTable.shipped()
        assert len(t.updated) == 10 and t.updated.startswith("20")
        for model in ("claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-5-20251101", "claude-opus-4-1-20250805",
                      "claude-opus-4-20250514", "claude-sonnet-4-5-20250929", "claude-sonnet-4-20250514",
                      "claude-haiku-4-5-20251001"):
            assert t.price(model) is not None, model
        opus = t.price("claude-opus-4-6")
        assert opus is not None and (opus.input, opus.output, opus.cache_write_5m, opus.cache_write_1h,
                                     opus.cache_read) == (5.0, 25.0, 6.25, 10.0, 0.5)

    def test_names_resolve_without_provider_prefix_or_date_suffix_but_never_by_guess(self) -> None:
        t = table(**{"claude-x-1": SONNET})
        assert t.price("anthropic/claude-x-1") is t.price("claude-x-1-20260101") is t.price("claude-x-1")
        assert t.price("claude-x") is None and t.price(None) is None

    def test_long_context_rates_apply_to_the_whole_request(self) -> None:
        t = table(s=SONNET)
        short = Tokens(input=100_000, output=1_000, cache_write_5m=0, cache_write_1h=0, cache_read=100_000)
        assert t.cost("s", short) == pytest.approx((100_000 * 3 + 1_000 * 15 + 100_000 * 0.3) / 1e6)
        long = Tokens(input=100_000, output=1_000, cache_write_5m=0, cache_write_1h=0, cache_read=100_001)
        assert t.cost("s", long) == pytest.approx((100_000 * 6 + 1_000 * 22.5 + 100_001 * 0.6) / 1e6)

    def test_fast_speed_multiplies_and_unknown_models_have_no_price(self) -> None:
        t = table(o={**{k: v for k, v in SONNET.items() if k != "above_200k"}, "fast": 6.0})
        base = Tokens(1_000, 1_000, 0, 0, 0)
        fast = Tokens(1_000, 1_000, 0, 0, 0, speed="fast")
        assert t.cost("o", fast) == pytest.approx(6 * t.cost("o", base))  # type: ignore[operator]
        assert t.cost("nope", base) is None
        assert t.cost("nope", Tokens(0, 0, 0, 0, 0)) == 0.0  # no tokens, nothing to price
        assert t.cost("<synthetic>", base) == 0.0


def event_row(event_id: int, line: bytes) -> EventRow:
    return EventRow(event_id, 1, 0, 0, None, None, None, None, None, line.decode())


def test_stored_costs_follow_a_new_price_table(tmp_path: Path) -> None:
    """A model priced later (or re-priced) gets its cost on the next start, slots included."""
    store = Store(open_writer(tmp_path / "csm.db"))
    f = FileRow(file_id=1, path="/p/s.jsonl", root="/p", project="p", session_key="s", parent_session=None,
                dev=0, inode=0, size=0, mtime_ns=0, offset=0)
    line = json.dumps({"type": "assistant", "timestamp": "2026-02-10T12:00:00Z", "requestId": "r",
                       "message": {"id": "m", "model": "claude-new", "usage": {"input_tokens": 100_000}}}).encode()
    old = UsageSink(table())
    old.prepare(store)
    old.add(event_row(1, line), f, parse(line))
    with store.transaction():
        old.write(store)
    q = store.conn.execute
    assert q("SELECT cost_usd FROM usage_entries").fetchall() == [(None,)]
    assert q("SELECT cost_usd, unpriced_tokens FROM usage_slots").fetchall() == [(0.0, 100_000)]
    UsageSink(table(**{"claude-new": {**SONNET}})).prepare(store)
    assert q("SELECT cost_usd FROM usage_entries").fetchall() == [(0.3,)]
    assert q("SELECT cost_usd, unpriced_tokens, responses FROM usage_slots").fetchall() == [(0.3, 0, 1)]
    store.close()


def test_update_script_merges_litellm_files(tmp_path: Path) -> None:
    def litellm(**entries: dict[str, object]) -> Path:
        p = tmp_path / f"litellm{len(list(tmp_path.glob('litellm*')))}.json"
        p.write_text(json.dumps({"sample_spec": {"input_cost_per_token": 1}, **entries}))
        return p

    old = litellm(**{
        "claude-old-1": {"litellm_provider": "anthropic", "input_cost_per_token": 1.5e-05,
                         "output_cost_per_token": 7.5e-05, "cache_creation_input_token_cost": 1.875e-05,
                         "cache_read_input_token_cost": 1.5e-06},
        "anthropic.claude-old-1-v1:0": {"litellm_provider": "bedrock", "input_cost_per_token": 1},
    })
    new = litellm(**{"claude-opus-4-6": {
        "litellm_provider": "anthropic", "input_cost_per_token": 5e-06, "output_cost_per_token": 2.5e-05,
        "cache_creation_input_token_cost": 6.25e-06, "cache_creation_input_token_cost_above_1hr": 1e-05,
        "cache_read_input_token_cost": 5e-07, "input_cost_per_token_above_200k_tokens": 1e-05}})
    out = tmp_path / "prices.json"
    script = ROOT / "packaging" / "update_prices.py"
    for files in ([str(old)], [str(new)]):
        r = subprocess.run([sys.executable, str(script), *files, "--table", str(out), "--date", "2026-03-04"], check=False,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    t = PriceTable(out.read_bytes())
    assert t.updated == "2026-03-04"
    assert sorted(t.models) == ["claude-old-1", "claude-opus-4-6"], "a model the newer file lacks keeps its price"
    old_p = t.models["claude-old-1"]
    assert (old_p.input, old_p.output, old_p.cache_write_5m, old_p.cache_write_1h, old_p.cache_read) == (
        15.0, 75.0, 18.75, 30.0, 1.5)  # 1-hour writes: twice the input price when the file has none
    opus = t.models["claude-opus-4-6"]
    assert opus.fast == 6.0 and opus.cache_write_1h == 10.0
    assert opus.above_200k is not None and opus.above_200k.input == 10.0
    assert msgspec.json.decode(out.read_bytes())["unit"] == "USD per million tokens"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["m1", "m2", "m3"]), st.booleans(), st.integers(0, 50), st.integers(0, 3),
                          st.sampled_from(["2026-02-10T23:50:00Z", "2026-02-11T00:10:00Z"]),
                          st.sampled_from(["s1", "s2"])), min_size=1, max_size=25),
       st.integers(1, 6))
def test_slots_always_equal_the_sums_of_the_best_copies(
        tmp_path_factory: pytest.TempPathFactory, copies: list[tuple[str, bool, int, int, str, str]], batch: int,
) -> None:
    """Whatever the order and batching of the copies, each key keeps its best copy and the slots add up."""
    store = Store(open_writer(tmp_path_factory.mktemp("db") / "csm.db"))
    sink = UsageSink(PriceTable.shipped())
    sink.prepare(store)
    best: dict[str, tuple[int, int]] = {}
    for start in range(0, len(copies), batch):
        for i, (mid, side, out, cr, ts, session) in enumerate(copies[start:start + batch], start):
            obj = {"type": "assistant", "timestamp": ts, "requestId": "r", "isSidechain": side,
                   "message": {"id": mid, "model": "claude-opus-4-6",
                               "usage": {"input_tokens": 1, "output_tokens": out, "cache_read_input_tokens": cr}}}
            line = json.dumps(obj).encode()
            f = FileRow(file_id=1, path=f"/p/{session}.jsonl", root="/p", project="p", session_key=session,
                        parent_session=None, dev=0, inode=0, size=0, mtime_ns=0, offset=0)
            sink.add(event_row(i + 1, line), f, parse(line))
            rank = (0 if side else 1, 1 + out + cr)
            best[mid] = max(best.get(mid, rank), rank)
        with store.transaction():
            sink.write(store)
        sink.clear()
    q = store.conn.execute
    stored = {k.split()[0]: (1 - s, t) for k, s, t in q(
        "SELECT key, sidechain, input_tokens + output_tokens + cache_read_tokens FROM usage_entries")}
    assert stored == best
    sums = "SELECT slot, project, session_id, model, responses, input_tokens, output_tokens, cache_read_tokens, " \
           "round(cost_usd, 9), unpriced_tokens FROM usage_slots ORDER BY 1, 2, 3, 4"
    kept = q(sums).fetchall()
    for statement in REBUILD_SLOTS.split(";")[:-1]:
        q(statement)
    assert kept == q(sums).fetchall()
    store.close()

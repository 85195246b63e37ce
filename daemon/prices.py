"""What an API response cost, from the price table shipped in the package (``shared/prices.json``).

No network, ever: the table is data, dated, rebuilt from LiteLLM's price file by
``packaging/update_prices.py`` (see README "Token accounting"). A model the table does not
know has no price: its responses keep their tokens and get ``None`` as cost, shown as
"unpriced", never a silent zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import msgspec

from csm.daemon.reader import digest

LONG_CONTEXT = 200_000
"""Above this many input tokens (uncached + cache writes + cache reads) a request is billed at
the long-context rates, for the models that have them (Anthropic's rule: the whole request)."""
SYNTHETIC = "<synthetic>"
"""Claude Code's model name for placeholder and error messages: no API call, no cost."""
_DATE_SUFFIX = re.compile(r"-\d{8}$")


class Rates(msgspec.Struct, forbid_unknown_fields=True):
    """USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


class Price(Rates, forbid_unknown_fields=True):
    above_200k: Rates | None = None
    fast: float | None = None
    """Multiplier for ``usage.speed == "fast"`` responses."""


class PriceFile(msgspec.Struct):
    updated: str
    source: str
    unit: str
    models: dict[str, Price]


@dataclass(frozen=True)
class Tokens:
    """One response's usage: cache writes split into 5-minute and 1-hour ones."""

    input: int
    output: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    speed: str | None = None

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read


class PriceTable:
    def __init__(self, data: bytes) -> None:
        table = msgspec.json.decode(data, type=PriceFile)
        self.updated = table.updated
        self.models = table.models
        self.fingerprint = f"{table.updated} {digest(data).hex()[:16]}"
        self._resolved: dict[str | None, Price | None] = {}

    @classmethod
    def shipped(cls) -> PriceTable:
        return cls(resources.files("csm.shared").joinpath("prices.json").read_bytes())

    def price(self, model: str | None) -> Price | None:
        """The model's price: its exact name, else without a provider prefix or a date suffix."""
        try:
            return self._resolved[model]
        except KeyError:
            pass
        found = None
        if model:
            name = model.removeprefix("anthropic/")
            found = self.models.get(name) or self.models.get(_DATE_SUFFIX.sub("", name))
        self._resolved[model] = found
        return found

    def cost(self, model: str | None, t: Tokens) -> float | None:
        """USD, or None when the model has no price (and tokens were used)."""
        if model == SYNTHETIC or t.total == 0:
            return 0.0
        p = self.price(model)
        if p is None:
            return None
        r: Rates = p
        if p.above_200k is not None and t.input + t.cache_write_5m + t.cache_write_1h + t.cache_read > LONG_CONTEXT:
            r = p.above_200k
        usd = (t.input * r.input + t.output * r.output + t.cache_write_5m * r.cache_write_5m
               + t.cache_write_1h * r.cache_write_1h + t.cache_read * r.cache_read) / 1_000_000
        if t.speed == "fast" and p.fast:
            usd *= p.fast
        return usd

"""The blocks of a message's ``content``: typed, lenient, and cheap to skip.

``message.content`` is a string (a typed prompt) or a list of blocks: ``text``,
``thinking``, ``tool_use`` (``input`` is any JSON), ``tool_result`` (``content`` is a
string or a list of ``text``/``image`` blocks), ``image``. Tool inputs and outputs
stay ``msgspec.Raw`` until someone asks for them, so a reader that wants only the
prose (the search index's default table) never builds the large strings.
"""

from __future__ import annotations

from typing import Any

import msgspec

from csm.shared.protocol import IMAGE_TYPES, Image

CACHE = "csm cache: "
"""Starts the JSON name of a field that holds what was decoded on first use. Such a field is a cache,
not data: Claude Code never writes the key, and a line that did would only change what csm derives
from that line itself, which the line's own content decides anyway. (A field, not a
``__dict__``: ``dict=True`` makes every view a GC-tracked object, and the collector's extra passes
cost more than the decode they save.)"""


class Block(msgspec.Struct, gc=False):
    """One content block. Its tool input and output are decoded on first use and kept (``value``,
    ``output``), so the search sink and ``csm watch`` reading the same block decode them once.
    Untracked by the garbage collector (``gc=False``): a block refers to no object that refers back."""

    type: str = ""
    text: str | None = None
    thinking: str | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw()
    tool_use_id: str | None = None
    content: msgspec.Raw = msgspec.Raw()
    is_error: bool | None = None
    source: msgspec.Raw = msgspec.Raw()
    value_cache: Any = msgspec.field(default=msgspec.UNSET, name=CACHE + "value")
    output_cache: str | None = msgspec.field(default=None, name=CACHE + "output")

    @property
    def value(self) -> Any:
        """A ``tool_use``'s input, decoded."""
        if self.value_cache is msgspec.UNSET:
            self.value_cache = decode_any(self.input)
        return self.value_cache

    @property
    def output(self) -> str:
        """A ``tool_result``'s output as text; images and other media are left out."""
        if self.output_cache is None:
            self.output_cache = result_text(self)
        return self.output_cache


_content = msgspec.json.Decoder(str | list[Block])
_any = msgspec.json.Decoder()


def blocks(raw: msgspec.Raw | bytes | None) -> list[Block]:
    """The content as blocks (a string becomes one ``text`` block); odd shapes are dropped, not fatal."""
    if not raw:
        return []
    try:
        value = _content.decode(raw)
    except msgspec.ValidationError:
        return _lenient(raw)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested deeper than msgspec goes
        return []
    return [Block(type="text", text=value)] if isinstance(value, str) else value


def _lenient(raw: msgspec.Raw | bytes) -> list[Block]:
    value = decode_any(raw)
    if not isinstance(value, list):
        return []
    out = []
    for item in value:
        if isinstance(item, dict):
            try:
                out.append(msgspec.convert(item, Block))
            except msgspec.ValidationError:
                t = item.get("type")
                out.append(Block(type=t if isinstance(t, str) else ""))
        elif isinstance(item, str):
            out.append(Block(type="text", text=item))
    return out


def decode_any(raw: msgspec.Raw | bytes | None) -> Any:
    if not raw:
        return None
    try:
        return _any.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None


def result_text(block: Block) -> str:
    """A ``tool_result``'s output as text; images and other media are left out."""
    value = decode_any(block.content)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [b.get("text") for b in value if isinstance(b, dict) and b.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def image(block: Block | dict[str, Any]) -> Image | None:
    """An ``image`` block's picture, when it is base64 data of a type every browser shows safely
    (not SVG, which may hold script); else None."""
    source = decode_any(block.source) if isinstance(block, Block) else block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        return None
    kind, data = source.get("media_type"), source.get("data")
    if kind not in IMAGE_TYPES or not isinstance(data, str) or not data:
        return None
    return Image(media_type=kind, data=data)


def result_images(block: Block) -> list[Image]:
    """The images of a ``tool_result`` (a screenshot a tool returned)."""
    value = decode_any(block.content)
    if not isinstance(value, list):
        return []
    found = (image(b) for b in value if isinstance(b, dict) and b.get("type") == "image")
    return [i for i in found if i is not None]


def strings(value: Any, out: list[str]) -> list[str]:
    """Every string inside a JSON value (a tool's input), in order: what a person would search for.

    A stack, not recursion: a value msgspec decoded may still be nested deeper than Python recurses."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            todo.extend(reversed(v.values()))
        elif isinstance(v, list):
            todo.extend(reversed(v))
    return out

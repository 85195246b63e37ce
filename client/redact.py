"""``--redact``: secrets and the home path taken out of a transcript before it is shared.

One list of patterns (``PATTERNS``, listed in README) serves every format: ``redact`` or
``Redactor.text`` for a string, ``Redactor.value`` for decoded JSON, ``Redactor.struct`` for a reply
(``csm export`` redacts the ``Transcript`` before Markdown or HTML renders it, so the renderers
need not know), ``Redactor.jsonl`` for raw lines. A raw line is redacted
inside its JSON string tokens only and each changed token is encoded again, so every line stays
valid JSON and the bytes of what nothing matched stay as they were.

The patterns aim at the forms secrets take in the wild; they are no proof that nothing is left.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

MARK = "[REDACTED:{}]"
S = TypeVar("S", bound=msgspec.Struct)


@dataclass(frozen=True)
class Pattern:
    """A kind of secret. ``regex`` finds it; its group ``keep`` (the name in ``password=…``, the word
    ``Bearer``), if any, stays in front of the mark. It can only match where one of ``needles`` is
    (lower case: looked for in the lower-cased text), which a plain substring search tells at C
    speed: most text meets no needle and costs no regular expression at all."""

    kind: str
    regex: str
    needles: tuple[str, ...]
    example: str
    """A made-up secret it must redact (README and the tests show each)."""
    fold: bool = False
    """Case does not matter: the needles are looked for in the lower-cased text."""


_SECRET_NAME = r"(?:password|passwd|secret|token|api[_-]?key)"
"""What a name ends with when its value is a secret (``DB_PASSWORD``, ``apiKey``, ``"token": …``)."""
_VALUE = r"""[^\s"'`,;&(){}\[\]<>$\\]{4,}"""
"""A secret's value after ``password=``: not a placeholder (``$VAR``, ``<token>``, ``{x}``) nor a call."""
_W = "(?<![A-Za-z0-9_])"  # nothing of a word right before: `ask-…` is no key

PATTERNS: tuple[Pattern, ...] = (
    Pattern("private-key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
                           r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\]*)",
            ("-----BEGIN",), "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
                             "-----END OPENSSH PRIVATE KEY-----"),
    Pattern("anthropic-key", _W + r"sk-ant-[A-Za-z0-9_-]{16,}", ("sk-ant-",),
            "sk-ant-api03-Xq3vB7nT2mK9pL4sR8wZ1cF6hJ0dG5yU"),
    Pattern("openai-key", _W + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", ("sk-",),
            "sk-proj-4fT9qL2mX7vB1nK8pR3sW6zC0hJ5dG"),
    Pattern("github-token", _W + r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R"),
    Pattern("aws-access-key-id", _W + r"(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", ("AKIA", "ASIA"),
            "AKIAIOSFODNN7EXAMPLE"),
    Pattern("aws-secret-key", r"(?i:(?P<keep>(?:aws_secret_access_key|aws_secret_key|secretaccesskey)"
                              r"\\?[\"']?\s*[=:]\s*\\?[\"']?))[A-Za-z0-9/+=]{40}",
            ("aws_secret", "secretaccesskey"), "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            fold=True),
    Pattern("slack-token", _W + r"xox[abprs]-[A-Za-z0-9-]{10,}", ("xox",), "xoxb-2048-4096-Zq8rT3mV9kL2pN7s"),
    Pattern("bearer", _W + r"(?P<keep>[Bb]earer\s+)[A-Za-z0-9._~+/-]{16,}=*", ("earer",),
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
    Pattern("url-password", r"(?P<keep>://[^/\s:@\"'\\]+:)[^/\s@\"'\\]+(?=@)", ("://",),
            "postgres://app:s3cretPassw0rd@db.example.com/app"),
    Pattern("password", rf"(?i:(?P<keep>{_SECRET_NAME}(?:=|\\?[\"']?\s*[:=]\s*\\?[\"'])))" + _VALUE,
            ("password", "passwd", "secret", "token", "apikey", "api_key", "api-key"),
            "DB_PASSWORD=hunter2hunter2 and token=tok_51Hq8xY", fold=True),
)


def home_patterns(home: str) -> tuple[Pattern, ...]:
    r"""The home path, replaced by ``~``: this user's ``$HOME``, any ``/home/NAME`` or ``/Users/NAME``,
    a Windows ``C:\Users\NAME``, and the same in Claude Code's project folder names (``-Users-NAME-…``)."""
    home = home.rstrip("/")
    mine = re.sub(r"[^A-Za-z0-9]", "-", home)
    own = (Pattern("home", re.escape(home) + r"(?![A-Za-z0-9._-])", (home,), home),
           Pattern("home", r"(?<![A-Za-z0-9])" + re.escape(mine) + r"(?![A-Za-z0-9])", (mine,), mine)
           ) if len(home) > 1 else ()
    return own + (
        Pattern("home", r"(?<![\w.-])/(?:home|Users)/[A-Za-z0-9._-]+", ("/home/", "/Users/"), "/home/alice"),
        Pattern("home", r"(?<![A-Za-z0-9])-(?:home|Users)-[A-Za-z0-9_]+", ("-home-", "-Users-"),
                "-home-alice-src-app"),
        Pattern("home", r"(?<![A-Za-z0-9])[A-Za-z]:\\\\?Users\\\\?[A-Za-z0-9._ -]+?(?=\\|$|[\s\"'])",
                (":\\Users", ":\\\\Users"), "C:\\Users\\alice\\src"),
    )


class Redactor:
    """Replaces secrets by ``[REDACTED:kind]`` and the home path by ``~``, counting each kind.

    The patterns are applied one after the other (a mark contains nothing another one matches)."""

    def __init__(self, home: str | None = None) -> None:
        patterns = PATTERNS + home_patterns(os.path.expanduser("~") if home is None else home)
        self._patterns: Active = [(p, re.compile(p.regex, re.S)) for p in patterns]
        self.counts: Counter[str] = Counter()

    def _mark(self, kind: str) -> Callable[[re.Match[str]], str]:
        def mark(m: re.Match[str]) -> str:
            self.counts[kind] += 1
            if kind == "home":
                return "~"
            return (m.groupdict().get("keep") or "") + MARK.format(kind)
        return mark

    @staticmethod
    def _active(s: str, among: Active) -> Active:
        """The patterns of ``among`` that can match in ``s``: one of their needles is in it."""
        low = s.lower()
        return [(p, rx) for p, rx in among if any(n in (low if p.fold else s) for n in p.needles)]

    def text(self, s: str, among: Active | None = None) -> str:
        for p, rx in self._active(s, self._patterns if among is None else among):
            s = rx.sub(self._mark(p.kind), s)
        return s

    def _named(self, name: str, v: str, among: Active | None = None) -> str:
        """The value of a key named like a secret (``"password": "…"``) is one, unless a placeholder."""
        if _SECRET_KEY.search(name) and _SECRET_VALUE.fullmatch(v):
            self.counts["password"] += 1
            return MARK.format("password")
        return self.text(v, among)

    def value(self, v: Any) -> Any:
        """Decoded JSON (or ``msgspec.to_builtins`` of a reply) with every string redacted, keys too."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {(self.text(k) if isinstance(k, str) else k):
                    (self._named(k, x) if isinstance(k, str) and isinstance(x, str) else self.value(x))
                    for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        return v

    def struct(self, obj: S) -> S:
        """A reply (``Transcript``) with every string redacted: the renderers need not know."""
        return msgspec.convert(self.value(msgspec.to_builtins(obj)), type(obj))

    def jsonl(self, line: bytes) -> bytes:
        """One raw JSON line (no newline) with its strings redacted, keys too; still valid JSON.

        Only the patterns with a needle in the raw line are tried on its strings, and a line with
        none is left alone without being taken apart. A needle has no character JSON escapes, so it
        is in the raw line wherever it is in a string, unless written with ``\\u`` or ``\\/``
        escapes: a line with any of those tries every pattern."""
        text = line.decode("utf-8")
        among = self._patterns if "\\u" in text or "\\/" in text else self._active(text, self._patterns)
        if not among:
            return line
        return _TOKEN.sub(lambda m: self._tokens(m, among), line)

    def _tokens(self, m: re.Match[bytes], among: Active) -> bytes:
        key = _decode(m["first"])
        if m["value"] is None:
            return _encode(m["first"], key, self.text(key, among))
        value = _decode(m["value"])
        return (_encode(m["first"], key, self.text(key, among)) + m["colon"]
                + _encode(m["value"], value, self._named(key, value, among)))


Active = list[tuple[Pattern, "re.Pattern[str]"]]
_S = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_TOKEN = re.compile(rb"(?P<first>" + _S + rb")(?:(?P<colon>\s*:\s*)(?P<value>" + _S + rb"))?", re.S)
"""A JSON string token, and the string value after it if it is a key. In a valid JSON text a ``"``
outside a string always opens one, and only a key is followed by ``:``."""
_SECRET_KEY = re.compile(_SECRET_NAME + "$", re.I)
_SECRET_VALUE = re.compile(_VALUE)


def _decode(token: bytes) -> str:
    return json.loads(token) if b"\\" in token else token[1:-1].decode("utf-8")


def _encode(token: bytes, before: str, after: str) -> bytes:
    """The token as it was if nothing changed, else ``after`` encoded as JSON."""
    if after == before:
        return token
    try:
        return json.dumps(after, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800) kept from the line: only \u escapes carry it
        return json.dumps(after).encode("ascii")


def redact(text: str) -> str:
    """``text`` with secrets and the home path replaced (the seam for renderers: one call, no state)."""
    return Redactor().text(text)


def summary(counts: Counter[str]) -> str:
    """What was replaced, for stderr: ``redacted 3 (home 2, openai-key 1)``."""
    if not counts:
        return "redacted nothing"
    return f"redacted {sum(counts.values())} ({', '.join(f'{k} {n}' for k, n in counts.most_common())})"

"""Who may use the page: the token, the ``Host`` header, and the headers every response carries.

Any local user can reach a loopback port (csmd's socket is 0700; a TCP port is not), so every run
makes a random token. The URL ``csm serve`` prints carries it once (``?token=``): the guard moves it
into an HttpOnly, SameSite=Strict cookie and redirects to the same URL without it, so it leaves no
trace in the history or a Referer. Every request needs the cookie (403 without), and a ``Host``
that is the bound address, so a page of another site whose name was rebound to 127.0.0.1 is
refused (DNS rebinding). POSTs also carry the token in a form field or ``X-CSM-Token`` header.
A strict Content-Security-Policy allows only the server's own scripts and styles: transcript
text that holds HTML or script is escaped by the templates, and could not run even if it were not.

A pure ASGI middleware (not ``BaseHTTPMiddleware``), so the event stream is never buffered.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]
TOKEN_HEADER = "x-csm-token"


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """The ``Host`` values a browser sends for the bound address (None: bound to every address)."""
    if host in ("0.0.0.0", "::", ""):
        return None
    names = {host, f"[{host}]" if ":" in host else host}
    if host in ("127.0.0.1", "::1", "localhost"):
        names |= {"localhost", "127.0.0.1", "[::1]"}  # names no other site can rebind
    return {f"{n}:{port}" for n in names} | ({*names} if port == 80 else set())


class Guard:
    def __init__(self, app: ASGI, token: str, hosts: set[str] | None, port: int) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts
        self.cookie = f"csm_token_{port}"  # one per port: two servers on one machine keep their own

    def valid(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.hosts is not None and headers.get("host", "").lower() not in self.hosts:
            await _plain(send, 421, "refused: this server answers only to its own address (Host header)")
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = dict(query).get("token")
        if self.valid(given):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            cookie = (f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/").encode()
            await _plain(send, 303, "", [(b"location", location.encode()), (b"set-cookie", cookie)])
            return
        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:
            jar = SimpleCookie()
        morsel = jar.get(self.cookie)
        if not self.valid(morsel.value if morsel else None):
            await _plain(send, 403, "forbidden: open the address csm serve printed (it carries this run's token)")
            return
        if scope["method"] not in ("GET", "HEAD") and not self.valid(headers.get(TOKEN_HEADER)):
            scope.setdefault("state", {})["check_form_token"] = True  # the handler reads the form field

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _plain(send: Callable[[Any], Awaitable[None]], status: int, text: str,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        *HEADERS, *(extra or [])]})
    await send({"type": "http.response.body", "body": body})

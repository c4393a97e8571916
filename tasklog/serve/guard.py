"""The server's guard: a token on every request, and headers that keep the pages to themselves.

As Jupyter does, the server starts with a random token in the URL it prints; the first visit
with ``?token=`` sets a cookie (HttpOnly, SameSite=Strict) and is sent on without the token,
so it stays out of the history and of any Referer. Scripts (a Prometheus scraper) send
``Authorization: Bearer TOKEN``. The token is compared in constant time.
"""

from __future__ import annotations

import hmac
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

__all__ = ["Guard", "COOKIE", "HEADERS"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The cookie's name, with the server's port after it: one per server on a host (a shared name
#: made two dashboards on one machine log each other out).
COOKIE = "tasklog-token"
# Everything the pages need ships in the package: nothing from elsewhere, no inline script or style,
# no frames around them (the log's text is shown with textContent only, never as markup).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
           (b"cache-control", b"no-store")]


class Guard:
    """ASGI middleware: refuse a request without the token; add the headers to every answer."""

    def __init__(self, app: App, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on with the headers added."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given, in_url = self._given(scope, _cookie(scope))
        if given is None or not hmac.compare_digest(given.encode(), self.token):
            await _refuse(send, "missing" if given is None else "wrong")
            return
        if in_url and scope["method"] == "GET" and not scope["path"].startswith(("/api/", "/metrics")):
            await _redirect_with_cookie(scope, send, given)
            return

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)
        await self.app(scope, receive, guarded)

    @staticmethod
    def _given(scope: Scope, cookie: str) -> tuple[str | None, bool]:
        """The token a request carries, and whether it came in the URL."""
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query:
            return query["token"][0], True
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                kind, _, token = value.decode("latin-1").partition(" ")
                if kind.lower() in ("bearer", "token"):
                    return token.strip(), False
            elif name == b"cookie":
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(value.decode("latin-1"))
                except Exception:
                    continue
                if cookie in jar:
                    return jar[cookie].value, False
        return None, False


def _cookie(scope: Scope) -> str:
    """The token cookie's name for the server answering ``scope``."""
    server = scope.get("server")
    return f"{COOKIE}-{server[1]}" if server else COOKIE


async def _refuse(send: Send, why: str) -> None:
    body = (f"403: a {why} token. Open the URL `tasklog serve` printed (with ?token=...), "
            "or send Authorization: Bearer TOKEN.\n").encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS]})
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(scope: Scope, send: Send, token: str) -> None:
    """The same page without the token in its URL, with the cookie that carries it from now on."""
    rest = [(k, v) for k, v in urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            if k != "token"]
    location = urllib.parse.quote(scope["path"]) + ("?" + urllib.parse.urlencode(rest) if rest else "")
    cookie = f"{_cookie(scope)}={token}; Path=/; HttpOnly; SameSite=Strict"
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode()), *HEADERS]})
    await send({"type": "http.response.body", "body": b""})

"""Browsers cannot drive the API by accident: a Host allow-list (DNS rebinding), an Origin
check with CORS only for configured origins (CSRF from any web page on the machine), and
JSON bodies only with a JSON content type (a `text/plain` form post is a "simple" request
that no preflight stops). Pure ASGI middleware, in front of authentication.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.middleware import request_id_of, send_envelope

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from engine.config import ServerConfig

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")  # noqa: S104 (names, not a bind)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CORS_METHODS = b"GET, POST, DELETE, OPTIONS"
_CORS_HEADERS = b"authorization, content-type, last-event-id, x-request-id"


def allowed_hosts(server: ServerConfig, with_tokens: bool) -> frozenset[str] | None:
    """The Host names accepted (lower case, no port); None accepts any. Default: the
    loopback names and the bind address; behind tokens on a wildcard bind, any name."""
    if server.allowed_hosts is not None:
        names = {h.lower().strip("[]") for h in server.allowed_hosts}
        return None if "*" in names else frozenset(names)
    if server.host in WILDCARD_BINDS:
        return None if with_tokens else frozenset(LOOPBACK_NAMES)
    return frozenset({*LOOPBACK_NAMES, server.host.lower().strip("[]")})


def host_name(value: str) -> str:
    """`example.com:8787` -> `example.com`, `[::1]:8787` -> `::1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _origin_host(origin: str) -> str:
    return host_name(origin.partition("://")[2].split("/", 1)[0])


class BrowserGuard:
    def __init__(self, app: ASGIApp, server: ServerConfig, *, with_tokens: bool) -> None:
        self.app = app
        self.hosts = allowed_hosts(server, with_tokens)
        self.origins = frozenset(o.rstrip("/").lower() for o in server.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        passed, origin = await self.screen(scope, send)
        if not passed:
            return
        if origin is None:
            await self.app(scope, receive, send)
            return

        async def send_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors(origin)]}
            await send(message)

        await self.app(scope, receive, send_cors)

    async def screen(self, scope: Scope, send: Send) -> tuple[bool, str | None]:
        """(passed, CORS origin): a refused request (or an answered preflight) is not
        passed; a passed one from a configured origin gets its CORS headers (`cors()`)."""
        headers = dict(scope.get("headers", []))
        host = headers.get(b"host", b"").decode("latin-1")
        if self.hosts is not None and host_name(host) not in self.hosts:
            await self._refuse(
                scope,
                send,
                421,
                "host_not_allowed",
                f"Host {host!r} is not one this server answers to",
                "use a name listed in server.allowed_hosts (default: the loopback names)",
            )
            return False, None
        origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/").lower()
        allowed = bool(origin) and origin in self.origins
        if origin and not allowed and _origin_host(origin) != host_name(host):
            await self._refuse(
                scope,
                send,
                403,
                "origin_not_allowed",
                f"requests from the web origin {origin!r} are not allowed",
                "list the origin under server.cors_origins to allow a browser app",
            )
            return False, None
        method = scope.get("method", "GET")
        if allowed and method == "OPTIONS":
            await self._preflight(send, origin)
            return False, None
        if method in _BODY_METHODS and _has_body(headers) and not _is_json(headers):
            ctype = headers.get(b"content-type", b"").decode("latin-1") or "none"
            await self._refuse(
                scope,
                send,
                415,
                "unsupported_media_type",
                f"the body must be JSON sent as Content-Type: application/json, not {ctype}",
                "send the header Content-Type: application/json",
            )
            return False, None
        return True, origin if allowed else None

    async def _preflight(self, send: Send, origin: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", origin.encode()),
                    (b"access-control-allow-methods", _CORS_METHODS),
                    (b"access-control-allow-headers", _CORS_HEADERS),
                    (b"access-control-max-age", b"600"),
                    (b"vary", b"Origin"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(
        self, scope: Scope, send: Send, status: int, code: str, message: str, suggestion: str
    ) -> None:
        # The request's body is never read, so the connection cannot carry another request:
        # say so, or a client reusing it finds it dropped ("Server disconnected").
        async def closing(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), (b"connection", b"close")]}
            await send(msg)

        await send_envelope(closing, status, request_id_of(scope), code, message, suggestion)


def cors(origin: str) -> list[tuple[bytes, bytes]]:
    """The headers a response to an allowed origin carries."""
    return [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]


def _has_body(headers: dict[bytes, bytes]) -> bool:
    if b"transfer-encoding" in headers:
        return True
    length = headers.get(b"content-length", b"0").strip()
    return length not in (b"", b"0")


def _is_json(headers: dict[bytes, bytes]) -> bool:
    mime = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or (
        mime.startswith(b"application/") and mime.endswith(b"+json")
    )

"""Pure ASGI middleware (not BaseHTTPMiddleware, which costs throughput): request id,
body size limit, and a last-resort guard so every error is a JSON envelope."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.envelopes import ENCODER, ErrorBody, ErrorEnvelope
from api.errors import ApiError

log = logging.getLogger("sluice.api")


_ID_BYTES = 6
_POOL_IDS = 4096
_pool: list[str] = []


def new_request_id() -> str:
    """`req_` + 12 random hex digits, drawn from a buffer refilled by one urandom call per
    4096 ids (a syscall a request showed in the dashboard profile)."""
    if not _pool:
        raw = secrets.token_bytes(_ID_BYTES * _POOL_IDS).hex()
        step = 2 * _ID_BYTES
        _pool.extend(f"req_{raw[i : i + step]}" for i in range(0, len(raw), step))
    return _pool.pop()


def request_id_of(scope: Scope) -> str:
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        rid = state["request_id"] = new_request_id()
    return str(rid)


async def send_envelope(
    send: Send,
    status: int,
    request_id: str,
    code: str,
    message: str,
    suggestion: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    body = ENCODER.encode(
        ErrorEnvelope(
            request_id=request_id,
            status="error",
            error=ErrorBody(code=code, message=message, suggestion=suggestion),
        )
    )
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def stamped(message: Message, header: tuple[bytes, bytes]) -> Message:
    """A response start carrying the request id header (unless the app set its own)."""
    headers = list(message.get("headers", []))
    if not any(k.lower() == b"x-request-id" for k, _ in headers):
        headers.append(header)
    return {**message, "headers": headers}


async def unhandled(send: Send, rid: str, answered: bool) -> None:
    """An exception escaped the app: logged, and a 500 envelope unless a response began."""
    log.exception("unhandled error in request %s", rid)
    if not answered:
        message = f"internal error; see the server log for request {rid}"
        await send_envelope(send, 500, rid, "internal_error", message)


class RequestIdMiddleware:
    """Gives every request a `req_` + 12 hex id, echoes it as X-Request-ID, and turns any
    exception that escaped the app into a 500 envelope (never an HTML page or a trace).
    The server uses api/front.py, which does the same in its one layer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        header = (b"x-request-id", rid.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = stamped(message, header)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            await unhandled(send, rid, started)


class BodyLimitMiddleware:
    """413 envelope for a body over the limit, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.declared_too_large(scope):
            await self.too_large(scope, send)
            return
        try:
            await self.app(scope, self.limited(receive), send)
        except BodyTooLarge:
            await self.too_large(scope, send)

    def declared_too_large(self, scope: Scope) -> bool:
        """Whether the Content-Length alone is over the limit."""
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    return int(value) > self.limit
                except ValueError:
                    return False
        return False

    def limited(self, receive: Receive) -> Receive:
        """`receive` raising BodyTooLarge once the body read so far passes the limit."""
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        return limited_receive

    async def too_large(self, scope: Scope, send: Send) -> None:
        await send_envelope(
            send,
            413,
            request_id_of(scope),
            "body_too_large",
            f"request body exceeds the limit of {self.limit} bytes",
            suggestion="send a smaller body, or raise server.body_limit_bytes",
        )


class BodyTooLarge(ApiError):
    """Raised inside receive() when a streamed (chunked) body passes the limit; a handler
    reading the body turns it into the same 413 envelope as a Content-Length over it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "body_too_large",
            f"request body exceeds the limit of {limit} bytes",
            suggestion="send a smaller body, or raise server.body_limit_bytes",
        )


def client_host(scope: Scope) -> str | None:
    client: Any = scope.get("client")
    return client[0] if client else None

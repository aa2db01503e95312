"""Admission control: past a bound the answer is immediate, never a queue without end.

Requests in progress are counted in all and per principal (with tokens; without, the one
loopback user has the server-wide bounds), and request bodies in flight in bytes; a
request past a bound is refused at once with `Retry-After`: 429 when its principal is over
its own share, 503 when the server as a whole is. Probes, metrics and the OpenAPI document
are never refused.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from api.auth import OPEN_PATHS
from api.middleware import request_id_of, send_envelope

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from engine.config import Config

RETRY_AFTER_S = 1
Held = tuple[bool, str | None, int]  # (counted, principal, body bytes)
_OPEN: Held = (False, None, 0)


class Admission:
    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        limits = config.limits
        self.max_total = limits.max_concurrent_requests
        self.max_per_principal = limits.max_concurrent_requests_per_principal
        self.max_bytes = limits.max_bytes_in_flight
        self.body_limit = config.server.body_limit_bytes
        self.total = 0
        self.bytes = 0
        self.by_principal: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held = await self.enter(scope, send)
        if held is None:
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.leave(held)

    async def enter(self, scope: Scope, send: Send) -> Held | None:
        """Count an HTTP request in; None when it is refused (the refusal has been sent).
        Probes, metrics and the OpenAPI document are never counted nor refused."""
        if scope.get("path") in OPEN_PATHS:
            return _OPEN
        # without tokens there is one user (loopback only): the server-wide bounds apply
        who = scope.get("state", {}).get("principal")
        size = _body_size(scope, self.body_limit)
        refusal = self._refusal(who, size)
        if refusal is not None:
            status, code, message, setting = refusal
            await send_envelope(
                send,
                status,
                request_id_of(scope),
                code,
                message,
                suggestion=f"retry after {RETRY_AFTER_S}s, or raise limits.{setting}",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            return None
        self.total += 1
        self.bytes += size
        if who is not None:
            self.by_principal[who] += 1
        return (True, who, size)

    def leave(self, held: Held) -> None:
        """Count a request `enter` let in back out."""
        counted, who, size = held
        if not counted:
            return
        self.total -= 1
        self.bytes -= size
        if who is not None:
            self.by_principal[who] -= 1
            if self.by_principal[who] <= 0:
                del self.by_principal[who]

    def _refusal(self, who: str | None, size: int) -> tuple[int, str, str, str] | None:
        if who is not None and self.by_principal[who] >= self.max_per_principal:
            return (
                429,
                "too_many_requests",
                f"principal {who!r} already has {self.by_principal[who]} requests in progress",
                "max_concurrent_requests_per_principal",
            )
        if self.total >= self.max_total:
            return (
                503,
                "server_busy",
                f"{self.total} requests are in progress, the server's bound",
                "max_concurrent_requests",
            )
        if self.bytes + size > self.max_bytes and self.total > 0:
            return (
                503,
                "server_busy",
                f"{self.bytes} bytes of request bodies are in flight; {size} more would pass "
                f"the bound of {self.max_bytes}",
                "max_bytes_in_flight",
            )
        return None


def _body_size(scope: Scope, body_limit: int) -> int:
    """The body's declared length; a chunked body may grow to the body limit."""
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return body_limit
        if key == b"transfer-encoding":
            return body_limit
    return 0

"""Bearer-token authentication and per-principal rate limits, as pure ASGI middleware.

`Authorization: Bearer <token>` is hashed (sha256) and compared in constant time
(`hmac.compare_digest`) against every configured token (`token` or `token_sha256`), without
stopping at the first match; the matching entry's principal goes to
`scope["state"]["principal"]`. Missing or wrong credentials get a 401 envelope with
`WWW-Authenticate: Bearer`; a principal over its `requests_per_minute` gets a 429 envelope
with `Retry-After`, and so does a client address past `auth.failed_attempts_per_minute`
missing or wrong tokens (token guessing). Probes, metrics, the OpenAPI document and CORS
preflights are open; with no tokens configured everything is (the server then binds
loopback only).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.middleware import client_host, request_id_of, send_envelope

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from engine.config import Config

MAX_TRACKED_ADDRESSES = 65_536
OPEN_PATHS = frozenset({"/v1/health", "/healthz", "/readyz", "/metrics", "/openapi.json"})


@dataclass(slots=True)
class TokenBucket:
    """`rate_per_minute` requests a minute, with bursts up to the same number."""

    rate_per_minute: int
    tokens: float
    updated: float

    def take(self, now: float) -> float | None:
        """Spend one token; None when allowed, else the seconds until one is available."""
        per_second = self.rate_per_minute / 60.0
        self.tokens = min(
            float(self.rate_per_minute), self.tokens + (now - self.updated) * per_second
        )
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / per_second


class BearerAuth:
    def __init__(
        self, app: ASGIApp, config: Config, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.app = app
        self.clock = clock
        self.entries: list[tuple[bytes, str]] = []  # (sha256 digest, principal)
        self.limits: dict[str, int] = {}
        self.admins: set[str] = set()
        for token in config.auth.tokens:
            if token.token is not None:
                digest = hashlib.sha256(token.token.encode()).digest()
            elif token.token_sha256 is not None:
                digest = bytes.fromhex(token.token_sha256)
            else:
                continue
            self.entries.append((digest, token.principal))
            if token.admin:
                self.admins.add(token.principal)
            if token.requests_per_minute is not None:
                self.limits.setdefault(token.principal, token.requests_per_minute)
        self.buckets: dict[str, TokenBucket] = {}
        # failed attempts per client address: guessing tokens costs a minute per N tries
        self.failures_per_minute = config.auth.failed_attempts_per_minute
        self.failures: OrderedDict[str, TokenBucket] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self.authenticate(scope, send):
            await self.app(scope, receive, send)

    async def authenticate(self, scope: Scope, send: Send) -> bool:
        """Whether the request may go on (its principal in scope state); if not, the
        refusal has been sent."""
        if (
            scope["type"] not in ("http", "websocket")
            or not self.entries
            or scope.get("method") == "OPTIONS"
            or scope.get("path") in OPEN_PATHS
        ):
            return True
        address = client_host(scope) or "?"
        retry = self._failures_exhausted(address)
        if retry is not None:
            seconds = max(1, math.ceil(retry))
            await send_envelope(
                send,
                429,
                request_id_of(scope),
                "too_many_failed_attempts",
                f"too many missing or wrong tokens from {address}; at most "
                f"{self.failures_per_minute} a minute",
                suggestion=f"retry after {seconds}s with a valid token",
                headers={"Retry-After": str(seconds)},
            )
            return False
        presented = _bearer(scope)
        if scope["type"] == "websocket" and (
            presented is None or self.principal_of(presented) is None
        ):
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return False
        if presented is None:
            self._failed(address)
            await self._unauthorized(scope, send, "missing bearer token")
            return False
        principal = self.principal_of(presented)
        if principal is None:
            self._failed(address)
            await self._unauthorized(scope, send, "invalid bearer token")
            return False
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["admin"] = principal in self.admins
        retry = self._rate_limited(principal)
        if retry is not None:
            seconds = max(1, math.ceil(retry))
            await send_envelope(
                send,
                429,
                request_id_of(scope),
                "rate_limited",
                f"principal {principal!r} is over its limit of "
                f"{self.limits[principal]} requests per minute",
                suggestion=f"retry after {seconds}s, or raise requests_per_minute for its "
                "token under auth.tokens",
                headers={"Retry-After": str(seconds)},
            )
            return False
        return True

    def principal_of(self, presented: str) -> str | None:
        """The principal of a presented token; every entry is compared (constant time)."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for expected, principal in self.entries:
            if hmac.compare_digest(digest, expected) and found is None:
                found = principal
        return found

    def _failures_exhausted(self, address: str) -> float | None:
        """Seconds until `address` may try again, or None when it has attempts left."""
        bucket = self.failures.get(address)
        if bucket is None:
            return None
        now = self.clock()
        per_second = bucket.rate_per_minute / 60.0
        tokens = min(
            float(bucket.rate_per_minute), bucket.tokens + (now - bucket.updated) * per_second
        )
        return None if tokens >= 1.0 else (1.0 - tokens) / per_second

    def _failed(self, address: str) -> None:
        bucket = self.failures.get(address)
        now = self.clock()
        if bucket is None:
            rate = self.failures_per_minute
            bucket = self.failures[address] = TokenBucket(rate, float(rate), now)
            while len(self.failures) > MAX_TRACKED_ADDRESSES:  # bounded, oldest first
                self.failures.popitem(last=False)
        bucket.take(now)

    def _rate_limited(self, principal: str) -> float | None:
        rate = self.limits.get(principal)
        if rate is None:
            return None
        now = self.clock()
        bucket = self.buckets.get(principal)
        if bucket is None:
            bucket = self.buckets[principal] = TokenBucket(rate, float(rate), now)
        return bucket.take(now)

    async def _unauthorized(self, scope: Scope, send: Send, message: str) -> None:
        await send_envelope(
            send,
            401,
            request_id_of(scope),
            "unauthorized",
            message,
            suggestion="send `Authorization: Bearer <token>` with a token listed under "
            "auth.tokens in sluice.yaml",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").strip().partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
            return None
    return None

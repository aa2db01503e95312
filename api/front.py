"""The one ASGI layer in front of the Starlette app: request id, metrics, body limit, browser
guard, bearer authentication and admission, in that order, in one coroutine.

Each of these was its own middleware (their classes remain, each usable alone, and hold the
logic); six layers meant six coroutine frames and three wrappers of `send` on every request,
which the dashboard profile (bench/dashboard.py) showed on a lookup. Here a request passes
each gate in turn, `send` is wrapped once (status for the metrics, the CORS headers, the
X-Request-ID header), and any exception that escapes the app becomes a 500 envelope.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from api.admission import Admission
from api.auth import BearerAuth
from api.guard import BrowserGuard, cors
from api.metrics import METRICS, Metrics, MetricsMiddleware
from api.middleware import BodyLimitMiddleware, BodyTooLarge, request_id_of, stamped, unhandled

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from engine.config import Config


class Front:
    def __init__(self, app: ASGIApp, config: Config, metrics: Metrics = METRICS) -> None:
        self.app = app
        self.metrics = MetricsMiddleware(app, metrics)
        self.body = BodyLimitMiddleware(app, config.server.body_limit_bytes)
        self.guard = BrowserGuard(app, config.server, with_tokens=bool(config.auth.tokens))
        self.auth = BearerAuth(app, config)
        self.admission = Admission(app, config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.auth(scope, receive, send)  # a websocket authenticates; lifespan passes
            return
        rid = request_id_of(scope)
        header = (b"x-request-id", rid.encode())
        started = time.perf_counter()
        status = 500
        answered = False
        origin: str | None = None  # set once the guard allows a configured CORS origin

        async def respond(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                answered = True
                status = message["status"]
                if origin is not None:
                    headers = [*message.get("headers", []), *cors(origin)]
                    message = {**message, "headers": headers}
                message = stamped(message, header)
            await send(message)

        in_flight = self.metrics.m.in_flight
        in_flight.inc()
        try:
            if self.body.declared_too_large(scope):
                await self.body.too_large(scope, respond)
                return
            passed, origin = await self.guard.screen(scope, respond)
            if not passed or not await self.auth.authenticate(scope, respond):
                return
            held = await self.admission.enter(scope, respond)
            if held is None:
                return
            try:
                await self.app(scope, self.body.limited(receive), respond)
            except BodyTooLarge:
                await self.body.too_large(scope, respond)
            finally:
                self.admission.leave(held)
        except Exception:
            await unhandled(send, rid, answered)
        finally:
            in_flight.dec()
            self.metrics.record(scope, status, started)

"""BearerAuth (api/auth.py): constant-time token check, principal in scope state, 401 and
429 envelopes, open paths, per-principal token buckets."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from api.auth import BearerAuth, TokenBucket
from api.middleware import RequestIdMiddleware
from engine.config import Config, load_config_text
from tests.helpers import assert_error_envelope

CONFIG = load_config_text(f"""
auth:
  tokens:
    - {{principal: agent, token: agent-token-1, requests_per_minute: 3}}
    - {{principal: dash, token_sha256: "{hashlib.sha256(b"dash-token-2").hexdigest()}"}}
""")


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    principal = scope.get("state", {}).get("principal")
    body = f"principal={principal}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(config: Config = CONFIG, clock: Clock | None = None) -> httpx.AsyncClient:
    app = RequestIdMiddleware(BearerAuth(echo, config, clock=clock or Clock()))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


async def test_valid_tokens_set_the_principal() -> None:
    async with client() as c:
        r = await c.get("/v1/databases", headers={"Authorization": "Bearer agent-token-1"})
        assert r.status_code == 200 and r.text == "principal=agent"
        r = await c.get("/v1/databases", headers={"authorization": "bearer dash-token-2"})
        assert r.status_code == 200 and r.text == "principal=dash"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic YWdlbnQ6eA=="},
        {"Authorization": "Bearer "},
        {"Authorization": "agent-token-1"},
        {"Authorization": "Bearer agent-token-1x"},
    ],
)
async def test_missing_or_wrong_token_is_401(headers: dict[str, str]) -> None:
    async with client() as c:
        r = await c.post("/v1/query/simple", headers=headers, json={})
    body = assert_error_envelope(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert "auth.tokens" in body["error"]["suggestion"]


@pytest.mark.parametrize("path", ["/v1/health", "/healthz", "/readyz", "/metrics", "/openapi.json"])
async def test_open_paths(path: str) -> None:
    async with client() as c:
        r = await c.get(path)
    assert r.status_code == 200 and r.text == "principal=None"


async def test_options_preflight_is_open() -> None:
    async with client() as c:
        r = await c.options("/v1/query")
    assert r.status_code == 200


async def test_no_tokens_configured_means_open() -> None:
    async with client(load_config_text("")) as c:
        r = await c.get("/v1/databases")
    assert r.status_code == 200 and r.text == "principal=None"


async def test_rate_limit_per_principal_with_retry_after() -> None:
    clock = Clock()
    agent = {"Authorization": "Bearer agent-token-1"}
    async with client(clock=clock) as c:
        for _ in range(3):
            assert (await c.get("/v1/x", headers=agent)).status_code == 200
        r = await c.get("/v1/x", headers=agent)
        body = assert_error_envelope(r, 429, "rate_limited")
        assert r.headers["retry-after"] == "20"  # one token every 60/3 s
        assert "3 requests per minute" in body["error"]["message"]
        # another principal has no limit and is not affected
        assert (
            await c.get("/v1/x", headers={"Authorization": "Bearer dash-token-2"})
        ).status_code == 200
        clock.now += 20
        assert (await c.get("/v1/x", headers=agent)).status_code == 200
        assert (await c.get("/v1/x", headers=agent)).status_code == 429


def test_token_bucket_refills_up_to_capacity() -> None:
    bucket = TokenBucket(60, 60.0, 0.0)
    assert all(bucket.take(0.0) is None for _ in range(60))
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1000.0) is None and bucket.tokens == pytest.approx(59.0)


def test_every_entry_is_compared() -> None:
    auth = BearerAuth(echo, CONFIG)
    assert auth.principal_of("agent-token-1") == "agent"
    assert auth.principal_of("dash-token-2") == "dash"
    assert auth.principal_of("nope") is None

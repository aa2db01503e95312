"""Assertions shared by the HTTP tests: one canonical error shape for every error test."""

from __future__ import annotations

import re
from typing import Any

import httpx

REQUEST_ID = re.compile(r"^req_[0-9a-f]{12}$")


def assert_error_envelope(
    resp: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """Every error is a JSON envelope {request_id, status: "error", error: {code, message,
    suggestion, details}} whose request_id matches the X-Request-ID header."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    body = resp.json()
    assert set(body) == {"request_id", "status", "error"}, body
    assert body["status"] == "error"
    assert REQUEST_ID.match(body["request_id"]), body
    assert resp.headers["x-request-id"] == body["request_id"]
    assert set(body["error"]) == {"code", "message", "suggestion", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in resp.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


def assert_blocked(resp: httpx.Response, stage: str) -> dict[str, Any]:
    assert resp.status_code == 403, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"request_id", "status", "error"}, body
    assert body["status"] == "blocked"
    assert set(body["error"]) == {"stage", "reason", "suggestion"}
    assert body["error"]["stage"] == stage, body
    assert resp.headers["x-request-id"] == body["request_id"]
    return body

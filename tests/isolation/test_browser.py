"""A web page in a browser on the same machine cannot drive the API (issue 11): Host
allow-list, Origin check with CORS only where configured, JSON bodies only as JSON, and
token guessing rate-limited per client address."""

from __future__ import annotations

import time

import httpx

from tests.isolation.conftest import Iso

QUERY = {"database": "shop", "table": "items", "query": "SELECT id FROM items LIMIT 1"}
RAW = b'{"database": "shop", "table": "items", "query": "SELECT id FROM items LIMIT 1"}'


def test_a_text_plain_post_is_415(iso: Iso) -> None:
    with iso.client("bob") as c:
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            r = c.post("/v1/query/simple", content=RAW, headers={"Content-Type": ctype})
            assert r.status_code == 415, (ctype, r.text[:200])
            assert r.json()["error"]["code"] == "unsupported_media_type"
        r = c.post("/v1/query/simple", content=RAW)  # no content type at all
        assert r.status_code == 415
        ok = c.post(
            "/v1/query/simple",
            content=RAW,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert ok.status_code == 200, ok.text[:200]


def test_a_foreign_host_is_refused(iso: Iso) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 reaches the server with its name."""
    with iso.client("bob") as c:
        r = c.post("/v1/query/simple", json=QUERY, headers={"Host": "evil.example"})
        assert r.status_code == 421, r.text[:200]
        assert r.json()["error"]["code"] == "host_not_allowed"
        r = c.get("/v1/databases", headers={"Host": "evil.example:8787"})
        assert r.status_code == 421
        port = iso.url.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert c.get("/v1/databases", headers={"Host": host}).status_code == 200


def test_a_foreign_origin_is_refused_and_gets_no_cors(iso: Iso) -> None:
    with iso.client("bob") as c:
        r = c.post("/v1/query/simple", json=QUERY, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403, r.text[:200]
        assert r.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in r.headers
        pre = c.options(
            "/v1/query/simple",
            headers={
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert "access-control-allow-origin" not in pre.headers


def test_wrong_tokens_are_rate_limited_per_address(iso: Iso) -> None:
    """300 guesses in a burst: after auth.failed_attempts_per_minute (30) they are 429 with
    Retry-After, and a right token from that address waits too; 401s before that."""
    statuses = []
    with httpx.Client(base_url=iso.url, timeout=10) as c:
        started = time.monotonic()
        for i in range(300):
            r = c.get("/v1/databases", headers={"Authorization": f"Bearer guess-{i}"})
            statuses.append(r.status_code)
        assert set(statuses[:30]) == {401}
        assert statuses[-1] == 429
        assert statuses.count(429) >= 250
        limited = c.get("/v1/databases", headers={"Authorization": "Bearer guess-x"})
        retry = int(limited.headers["Retry-After"])
        assert retry >= 1
        assert time.monotonic() - started < 30
        # even the right token waits: otherwise a 200 among the 429s would tell a right guess
        right = c.get("/v1/databases", headers={"Authorization": "Bearer tok-bob"})
        assert right.status_code == 429
        time.sleep(retry + 0.5)  # the other tests share this address
        assert (
            c.get("/v1/databases", headers={"Authorization": "Bearer tok-bob"}).status_code == 200
        )

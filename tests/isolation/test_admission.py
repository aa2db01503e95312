"""Admission control (issue 11): past the bounds on requests in progress, per principal
and in all, the answer is an immediate 429/503 with Retry-After, never a queue; one
principal's load does not refuse another's requests until the server itself is full."""

from __future__ import annotations

import threading
import time

from tests.isolation.conftest import Iso
from tests.isolation.test_bounds import cross_join

CHEAP = {"database": "shop", "table": "items", "query": "SELECT id FROM items LIMIT 1"}


def occupy(iso: Iso, who: str, n: int) -> list[threading.Thread]:
    """`n` requests of `who` that each hold a slot for ~3 s (a merge the timeout stops)."""

    def one() -> None:
        with iso.client(who, timeout=20) as c:
            c.post("/v1/query", json=cross_join())

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def test_a_principal_over_its_share_gets_429_and_others_do_not(iso: Iso) -> None:
    threads = occupy(iso, "bob", 3)  # limits.max_concurrent_requests_per_principal: 3
    try:
        time.sleep(0.8)
        with iso.client("bob") as bob, iso.client("carol") as carol:
            started = time.monotonic()
            r = bob.post("/v1/query/simple", json=CHEAP)
            assert time.monotonic() - started < 0.5, "refused after a wait"
            assert r.status_code == 429, r.text[:300]
            assert r.json()["error"]["code"] == "too_many_requests"
            assert int(r.headers["Retry-After"]) >= 1
            assert carol.post("/v1/query/simple", json=CHEAP).status_code == 200
    finally:
        for t in threads:
            t.join()


def test_a_full_server_answers_503_at_once(iso: Iso) -> None:
    threads = occupy(iso, "bob", 3) + occupy(iso, "alice", 2)  # limits.max_concurrent: 5
    try:
        time.sleep(0.8)
        with iso.client("carol") as carol:
            started = time.monotonic()
            r = carol.post("/v1/query/simple", json=CHEAP)
            assert time.monotonic() - started < 0.5
            assert r.status_code == 503, r.text[:300]
            assert r.json()["error"]["code"] == "server_busy"
            assert "Retry-After" in r.headers
            assert carol.get("/healthz").status_code == 200  # probes are never refused
    finally:
        for t in threads:
            t.join()
    with iso.client("carol") as carol:
        assert carol.post("/v1/query/simple", json=CHEAP).status_code == 200

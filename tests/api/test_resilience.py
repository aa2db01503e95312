"""The database goes away in the middle of a query: a clear envelope, a clean pool, and the
next request works."""

from __future__ import annotations

import threading
import time

import httpx

from tests.api.conftest import Server
from tests.helpers import assert_error_envelope
from tests.servers import PgServer

SLOW = "SELECT count(*) AS n FROM items a, items b, items c WHERE a.id + b.id + c.id > 0"


def test_backend_killed_mid_query(server: Server, seeded: tuple[PgServer, object]) -> None:
    pg, _ = seeded
    result: dict[str, httpx.Response] = {}

    def run() -> None:
        result["r"] = httpx.post(
            f"{server.url}/v1/query/simple",
            timeout=30,
            json={"database": "pg", "table": "items", "query": SLOW},
        )

    t = threading.Thread(target=run)
    t.start()
    killed: list[object] = []
    deadline = time.monotonic() + 10
    while not killed and time.monotonic() < deadline:
        time.sleep(0.05)
        killed = pg.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{pg.database}' AND state = 'active' "
            "AND query LIKE '%AS n FROM items%' AND pid <> pg_backend_pid()"
        )
    t.join(30)
    assert killed, "the slow query never showed up in pg_stat_activity"
    body = assert_error_envelope(result["r"], 503 if result["r"].status_code == 503 else 500)
    assert body["error"]["code"] in {"query_failed", "database_unavailable"}
    assert "terminat" in body["error"]["message"] or "connection" in body["error"]["message"]
    for _ in range(3):  # the pool replaced the dead connection
        r = httpx.post(
            f"{server.url}/v1/query/simple",
            timeout=30,
            json={"database": "pg", "table": "items", "query": "SELECT count(*) AS n FROM items"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["rows"] == [{"n": 500}]


def test_client_disconnect_stops_the_query_on_the_server(
    server: Server, seeded: tuple[PgServer, object]
) -> None:
    pg, _ = seeded
    marker = "AS disconnect_probe"
    sql = f"SELECT count(*) {marker} FROM items a, items b, items c WHERE a.id + b.id > c.id"

    def running() -> int:
        return len(
            pg.run(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE '%disconnect_probe%' AND pid <> pg_backend_pid()"
            )
        )

    def post_and_hang_up() -> None:
        with httpx.Client(base_url=server.url, timeout=0.6) as c:
            try:
                c.post("/v1/query/simple", json={"database": "pg", "table": "items", "query": sql})
            except httpx.ReadTimeout:
                pass  # the client gives up and closes the connection

    t = threading.Thread(target=post_and_hang_up)
    t.start()
    seen = False
    while t.is_alive() and not seen:
        seen = running() > 0
        time.sleep(0.02)
    t.join()
    assert seen, "the query never showed up in pg_stat_activity"
    deadline = time.monotonic() + 0.9  # before the 2 s statement_timeout could end it
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running() == 0, "the query kept running after the client went away"

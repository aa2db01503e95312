"""Every piece of work has a bound, enforced while it grows (issue 11, "Bounds")."""

from __future__ import annotations

import time

import httpx

from tests.isolation.conftest import Iso

# four copies of a 2,000-row step: 1.6e13 combinations, hours of DuckDB work
CROSS_MERGE = (
    "SELECT sum(hash(a.id + b.id * 7 + c.id * 13 + d.id)) AS h FROM s0 a, s0 b, s0 c, s0 d"
)


def cross_join(**extra: object) -> dict[str, object]:
    return {
        "steps": [
            {"step_id": "s0", "database": "shop", "table": "items", "query": "SELECT id FROM items"}
        ],
        "merge": CROSS_MERGE,
        **extra,
    }


def chain(n: int, **extra: object) -> dict[str, object]:
    steps = [
        {
            "step_id": f"s{i}",
            "database": "shop",
            "table": "items",
            "query": "SELECT id FROM items",
            **({"depends_on": [f"s{i - 1}"], "link_from": "id", "link_to": "id"} if i else {}),
        }
        for i in range(n)
    ]
    return {"steps": steps, "merge": f"SELECT count(*) FROM s{n - 1}", **extra}


def test_the_merge_is_stopped_at_the_query_timeout(iso: Iso) -> None:
    """query_timeout_seconds (3 s here) bounds the whole request, the merge included, and the
    server stops computing once the answer is sent."""
    with iso.client("bob", timeout=20) as c:
        started = time.monotonic()
        r = c.post("/v1/query", json=cross_join())
        took = time.monotonic() - started
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "request_timeout"
    assert took < 5.0, f"answered after {took:.1f}s for a 3s bound"
    assert iso.busy_seconds(1.5) < 0.3, "the server kept computing the merge"


def test_a_client_that_leaves_stops_the_merge(iso: Iso) -> None:
    with iso.client("bob", timeout=1.0) as c:
        try:
            c.post("/v1/query", json=cross_join())
        except httpx.ReadTimeout:
            pass
    time.sleep(0.5)
    assert iso.busy_seconds(1.5) < 0.3, "the merge went on after the client left"


def test_a_run_timeout_and_a_cancel_stop_the_merge(iso: Iso) -> None:
    with iso.client("bob") as c:
        r = c.post(
            "/v1/runs", json={"config": cross_join(), "config_format": "json", "timeout_secs": 2}
        )
        assert r.status_code == 202, r.text
        timed = r.json()["run_id"]
        r = c.post("/v1/runs", json={"config": cross_join(), "config_format": "json"})
        cancelled = r.json()["run_id"]
        time.sleep(1.0)  # both are merging now
        assert c.post(f"/v1/runs/{cancelled}/cancel").status_code in (200, 202)
        deadline = time.monotonic() + 6
        states: dict[str, dict] = {}
        while time.monotonic() < deadline:
            states = {rid: c.get(f"/v1/runs/{rid}").json() for rid in (timed, cancelled)}
            if all(s["status"] in ("completed", "failed", "cancelled") for s in states.values()):
                break
            time.sleep(0.2)
    assert states[timed]["status"] == "failed", states[timed]
    assert states[timed]["error"]["code"] == "run_timeout"
    assert states[cancelled]["status"] == "cancelled", states[cancelled]
    assert iso.busy_seconds(1.5) < 0.3


def test_a_result_stops_at_max_result_bytes(iso: Iso) -> None:
    """server.max_result_bytes is 3 MB here: a 50M-row merge stops writing there, fails
    clearly, keeps no file and advertises no pages."""
    query = {
        "steps": [
            {"step_id": "s0", "database": "shop", "table": "items", "query": "SELECT id FROM items"}
        ],
        "merge": "SELECT a.id AS x, b.id AS y, md5(a.id::varchar || b.id::varchar) AS m "
        "FROM s0 a, s0 b",
    }
    with iso.client("bob", timeout=20) as c:
        r = c.post("/v1/query", json=query)
        assert r.status_code == 413, r.text
        body = r.json()
        assert body["error"]["code"] == "result_too_large"
        assert "server.max_result_bytes" in body["error"]["message"]
        assert c.get(f"/v1/results/{body['request_id']}").status_code == 404
    results = iso.server.data_dir / "results"
    leftovers = [p.name for p in results.iterdir()] if results.exists() else []
    assert not [n for n in leftovers if n.startswith(body["request_id"])], leftovers
    assert sum(p.stat().st_size for p in results.iterdir()) < 3_000_000


def test_dag_size_and_depth_are_refused_early(iso: Iso) -> None:
    with iso.client("bob", timeout=20) as c:
        for body in (chain(5000), chain(2000, dry_run=True)):
            started = time.monotonic()
            r = c.post("/v1/query", json=body)
            assert r.status_code == 400, r.text[:300]
            assert "limits.max_steps" in r.json()["error"]["message"]
            assert time.monotonic() - started < 2.0
        r = c.post("/v1/query", json=chain(40))
        assert r.status_code == 400, r.text[:300]
        assert "limits.max_dag_depth" in r.json()["error"]["message"]
        r = c.post("/v1/runs", json={"config": chain(5000), "config_format": "json"})
        assert r.status_code in (400, 422) and "limits.max_steps" in r.text, r.text[:300]


def test_deeply_nested_run_configs_are_400(iso: Iso) -> None:
    nested_yaml = "".join("  " * i + "k:\n" for i in range(1000)) + "  " * 1000 + "v: 1\n"
    nested_json: dict = {"v": 1}
    for _ in range(1000):
        nested_json = {"k": nested_json}
    with iso.client("bob") as c:
        r = c.post("/v1/runs", json={"config": nested_yaml})
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"]["code"] == "too_deeply_nested"
        raw = '{"config": ' + "[" * 5000 + "]" * 5000 + "}"
        r = c.post("/v1/runs", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"]["code"] == "too_deeply_nested"
        r = c.post(
            "/v1/query",
            content="[" * 5000 + "]" * 5000,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text[:300]


def test_a_chunked_body_over_the_limit_is_413(iso: Iso) -> None:
    def chunks():
        yield b'{"database": "shop", "table": "items", "query": "'
        for _ in range(300):
            yield b"x" * 10_000
        yield b'"}'

    with iso.client("bob") as c:
        r = c.post(
            "/v1/query/simple", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "body_too_large"


def test_a_large_simple_answer_is_refused_with_the_paged_path(iso: Iso) -> None:
    """limits.max_inline_bytes is 20 MB here: a million rows (about 40 MB of JSON) stop."""
    with iso.client("bob", timeout=30) as c:
        r = c.post(
            "/v1/query/simple",
            json={"database": "shop_slow", "table": "big", "query": "SELECT id, label FROM big"},
        )
    assert r.status_code == 413, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "answer_too_large"
    assert "/v1/query" in error["suggestion"] and "/v1/results" in error["suggestion"]


def test_a_run_without_timeout_stops_at_max_run_seconds(iso: Iso) -> None:
    """limits.max_run_seconds is 6 s here: a run without timeout_secs is not unbounded."""
    with iso.client("bob") as c:
        started = time.monotonic()
        r = c.post("/v1/runs", json={"config": cross_join(), "config_format": "json"})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        run: dict = {}
        while time.monotonic() - started < 15:
            run = c.get(f"/v1/runs/{run_id}").json()
            if run["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.2)
    assert run["status"] == "failed", run
    assert run["error"]["code"] == "request_timeout"
    assert "limits.max_run_seconds" in run["error"]["message"]
    assert time.monotonic() - started < 12
    assert iso.busy_seconds(1.5) < 0.3

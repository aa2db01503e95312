"""Every stored object belongs to the principal that made it (issue 11): another principal
finds nothing there (404, as for an id that never existed); the admin grant sees it, and
each such look is audited."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.isolation.conftest import Iso

FEDERATED = {
    "steps": [
        {"step_id": "s0", "database": "shop", "table": "items", "query": "SELECT id FROM items"}
    ]
}


def bob_result(iso: Iso) -> str:
    with iso.client("bob") as c:
        r = c.post("/v1/query", json=FEDERATED)
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["data"]["row_count"] == 2000
    return str(body["request_id"])


def audit_lines(iso: Iso) -> list[dict[str, Any]]:
    path = iso.server.data_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_stored_result_is_its_owners_only(iso: Iso) -> None:
    rid = bob_result(iso)
    with iso.client("bob") as bob:
        page = bob.get(f"/v1/results/{rid}", params={"page": 2, "size": 500})
        assert page.status_code == 200 and len(page.json()["rows"]) == 500
    for who in ("alice", "carol"):
        with iso.client(who) as c:
            r = c.get(f"/v1/results/{rid}", params={"page": 2, "size": 500})
            assert r.status_code == 404, (who, r.text[:200])
            assert r.json()["error"]["code"] == "result_not_found"
            # the same answer as an id that never existed: nothing tells them it is there
            never = c.get("/v1/results/req_000000000000")
            assert (
                never.json()["error"]["message"].replace("req_000000000000", rid)
                == (r.json()["error"]["message"])
            )


def test_the_admin_grant_sees_it_and_is_audited(iso: Iso) -> None:
    rid = bob_result(iso)
    with iso.client("admin") as c:
        r = c.get(f"/v1/results/{rid}")
        assert r.status_code == 200 and r.json()["total_rows"] == 2000
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        hits = [
            e
            for e in audit_lines(iso)
            if e.get("event") == "admin_access" and e.get("object_id") == rid
        ]
        if hits:
            break
        time.sleep(0.1)
    assert hits and hits[0]["principal"] == "admin" and hits[0]["owner"] == "bob"


def submit(iso: Iso, who: str, **extra: object) -> str:
    with iso.client(who) as c:
        r = c.post("/v1/runs", json={"config": FEDERATED, "name": f"{who}-run", **extra})
    assert r.status_code == 202, r.text[:300]
    return str(r.json()["run_id"])


def wait_done(iso: Iso, who: str, run_id: str) -> dict[str, Any]:
    with iso.client(who) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            run = c.get(f"/v1/runs/{run_id}").json()
            if run["status"] in ("completed", "failed", "cancelled"):
                return run
            time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


def test_a_run_is_its_owners_only(iso: Iso) -> None:
    """Alice cannot list, read, follow, download, cancel or delete Bob's runs."""
    run_id = submit(iso, "bob", labels={"team": "bob"}, idempotency_key="nightly-bob")
    assert wait_done(iso, "bob", run_id)["status"] == "completed"
    with iso.client("alice") as c:
        listed = c.get("/v1/runs", params={"limit": 500}).json()["runs"]
        assert run_id not in {r["run_id"] for r in listed}
        assert "nightly-bob" not in str(listed)
        for method, path in (
            ("GET", f"/v1/runs/{run_id}"),
            ("GET", f"/v1/runs/{run_id}/logs"),
            ("GET", f"/v1/runs/{run_id}/result"),
            ("GET", f"/v1/results/{run_id}"),
            ("POST", f"/v1/runs/{run_id}/cancel"),
            ("DELETE", f"/v1/runs/{run_id}"),
        ):
            r = c.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code, r.text[:200])
    with iso.client("bob") as c:  # still there, untouched
        assert c.get(f"/v1/runs/{run_id}").json()["status"] == "completed"
        assert c.get(f"/v1/results/{run_id}").status_code == 200
        assert run_id in {r["run_id"] for r in c.get("/v1/runs").json()["runs"]}


def test_idempotency_keys_are_per_principal(iso: Iso) -> None:
    bobs = submit(iso, "bob", idempotency_key="shared-key")
    assert submit(iso, "bob", idempotency_key="shared-key") == bobs  # bob's own replay
    alices = submit(iso, "alice", idempotency_key="shared-key")
    assert alices != bobs, "alice replaying bob's key got bob's run"
    with iso.client("alice") as c:  # a different payload under her key: her conflict only
        other = {"steps": [dict(FEDERATED["steps"][0], query="SELECT id FROM items LIMIT 5")]}
        r = c.post("/v1/runs", json={"config": other, "idempotency_key": "shared-key"})
        assert r.status_code == 409
        assert bobs not in r.text and alices in r.text
        view = c.get(f"/v1/runs/{alices}").json()
        assert view["idempotency_key"] == "shared-key"


def test_the_admin_grant_sees_every_run_audited(iso: Iso) -> None:
    run_id = submit(iso, "carol")
    wait_done(iso, "carol", run_id)
    with iso.client("admin") as c:
        assert run_id in {
            r["run_id"] for r in c.get("/v1/runs", params={"limit": 500}).json()["runs"]
        }
        assert c.get(f"/v1/runs/{run_id}").status_code == 200
    deadline = time.monotonic() + 5
    hits: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not hits:
        hits = [e for e in audit_lines(iso) if e.get("object_id") == run_id]
        time.sleep(0.1)
    assert hits and hits[0]["owner"] == "carol" and hits[0]["object"] == "run"

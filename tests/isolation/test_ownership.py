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

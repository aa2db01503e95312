"""Client mistakes are 4xx envelopes naming the mistake, never a 500 (issue 11)."""

from __future__ import annotations

import pytest

from tests.isolation.conftest import Iso


def linked(link_to: str) -> dict[str, object]:
    return {
        "steps": [
            {"step_id": "a", "database": "shop", "table": "items", "query": "SELECT id FROM items"},
            {
                "step_id": "b",
                "database": "shop",
                "table": "people",
                "query": "SELECT id, name FROM people",
                "depends_on": ["a"],
                "link_from": "id",
                "link_to": link_to,
            },
        ],
        "merge": "SELECT count(*) AS n FROM b",
    }


@pytest.mark.parametrize(
    "link_to", ["no_such_column", 'id" = 1 OR "1', "id; DROP TABLE items", "name)) --"]
)
def test_a_bad_link_to_is_400(iso: Iso, link_to: str) -> None:
    with iso.client("bob") as c:
        r = c.post("/v1/query", json=linked(link_to))
    assert r.status_code == 400, r.text[:400]
    assert "link_to" in r.json()["error"]["message"]


def test_a_merge_reading_a_stripped_step_is_400_naming_it(iso: Iso) -> None:
    body = {
        "steps": [
            {"step_id": "a", "database": "shop", "table": "items", "query": "SELECT id FROM items"},
            {
                "step_id": "s",
                "database": "shop",
                "table": "secrets",
                "query": "SELECT * FROM secrets",
            },
        ],
        "merge": "SELECT * FROM a JOIN s ON a.id = s.id",
    }
    with iso.client("bob") as c:
        r = c.post("/v1/query", json=body)
    assert r.status_code == 400, r.text[:400]
    error = r.json()["error"]
    assert error["code"] == "merge_reads_stripped_step"
    assert "'s'" in error["message"]


def test_a_federated_step_on_a_missing_table_is_404_like_simple(iso: Iso) -> None:
    body = {
        "steps": [
            {"step_id": "a", "database": "shop", "table": "nope", "query": "SELECT id FROM nope"}
        ]
    }
    with iso.client("bob") as c:
        simple = c.post(
            "/v1/query/simple",
            json={"database": "shop", "table": "nope", "query": "SELECT id FROM nope"},
        )
        federated = c.post("/v1/query", json=body)
    assert simple.status_code == 404, simple.text[:300]
    assert federated.status_code == 404, federated.text[:400]
    assert federated.json()["error"]["code"] == simple.json()["error"]["code"]

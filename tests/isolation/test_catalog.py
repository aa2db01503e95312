"""The catalog goes through the same permission model as queries (issue 11): what a
principal may not read it does not see, table names, columns and sample values included."""

from __future__ import annotations

from typing import Any

from tests.isolation.conftest import Iso


def catalog(iso: Iso, who: str) -> dict[str, Any]:
    with iso.client(who) as c:
        r = c.get("/v1/databases", params={"size": 100})
    assert r.status_code == 200, r.text[:300]
    return {d["name"]: {t["name"]: t for t in d["tables"]} for d in r.json()["databases"]}


def test_bob_sees_the_email_samples_alice_may_not(iso: Iso) -> None:
    bob = catalog(iso, "bob")
    assert "@example.com" in str(bob["shop"]["people"]), "no email samples to hide: test is moot"
    alice = catalog(iso, "alice")
    people = alice["shop"]["people"]
    assert [f["name"] for f in people["fields"]] == ["id", "name"]
    assert "@example.com" not in str(alice)
    with iso.client("alice") as c:
        detail = c.get("/v1/databases/shop/tables/people").json()
    assert "email" not in str(detail) and "@example.com" not in str(detail)


def test_a_table_denied_to_everyone_is_not_listed_nor_suggested(iso: Iso) -> None:
    for who in ("alice", "bob", "carol"):
        seen = catalog(iso, who)
        assert all("secrets" not in tables for tables in seen.values()), who
        assert "hunter2" not in str(seen)
        with iso.client(who) as c:
            r = c.get("/v1/databases/shop/tables/secrets")
            assert r.status_code == 404, (who, r.text[:200])
            assert "secrets" not in r.json()["error"]["suggestion"]
            r = c.get("/v1/databases/shop/tables/secret")  # a near miss suggests nothing
            assert "secrets" not in str(r.json()["error"])


def test_carol_sees_only_what_she_may_read(iso: Iso) -> None:
    seen = catalog(iso, "carol")
    assert set(seen) == {"shop"}, "shop_slow is not in carol's permission set"
    assert set(seen["shop"]) == {"items"}
    with iso.client("carol") as c:
        assert c.get("/v1/databases/shop/tables/people").status_code == 404
        r = c.get("/v1/databases/shop_slow/tables/items")
        assert r.status_code == 404 and "shop_slow" not in str(r.json()["error"]["suggestion"])
        r = c.post(
            "/v1/query/simple",
            json={"database": "shop", "table": "peple", "query": "SELECT 1 FROM peple"},
        )
        assert "people" not in str(r.json()), "a query's 404 suggested a table she may not see"

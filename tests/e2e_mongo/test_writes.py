"""MQL writes over HTTP per principal level: R is blocked and changes nothing, W writes and
reports `rows_affected`, a deleteMany/updateMany without a filter needs A."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.collection import Collection

from tests.e2e_mongo.conftest import Env
from tests.helpers import assert_blocked

pytestmark = [pytest.mark.mongodb, pytest.mark.postgres]


@pytest.fixture
def ledger(env: Env) -> Collection[dict[str, Any]]:
    """`ledger` (created before the server started, so discovery knows it) reset to the same
    10 documents for each test."""
    coll = env.mongo.ledger
    coll.delete_many({})
    coll.insert_many([{"k": i, "grp": "a" if i < 6 else "b", "v": i * 10} for i in range(10)])
    return coll


def snapshot(coll: Collection[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(coll.find({}, sort=[("k", 1)]))


WRITES: list[tuple[str, dict[str, Any]]] = [
    ("insertOne", {"operation": "insertOne", "document": {"k": 100, "grp": "c", "v": 1}}),
    (
        "insertMany",
        {
            "operation": "insertMany",
            "documents": [{"k": 100 + i, "grp": "c", "v": i} for i in range(3)],
        },
    ),
    ("updateOne", {"operation": "updateOne", "filter": {"k": 2}, "update": {"$set": {"v": -1}}}),
    (
        "updateMany",
        {"operation": "updateMany", "filter": {"grp": "a"}, "update": {"$inc": {"v": 1}}},
    ),
    (
        "replaceOne",
        {
            "operation": "replaceOne",
            "filter": {"k": 7},
            "replacement": {"k": 7, "grp": "z", "v": 0},
        },
    ),
    ("deleteOne", {"operation": "deleteOne", "filter": {"k": 3}}),
    ("deleteMany", {"operation": "deleteMany", "filter": {"grp": "b"}}),
]
IDS = [w[0] for w in WRITES]


@pytest.mark.parametrize(("name", "body"), WRITES, ids=IDS)
def test_reader_is_blocked_and_nothing_changes(
    env: Env, ledger: Any, name: str, body: dict[str, Any]
) -> None:
    before = snapshot(ledger)
    body_ = assert_blocked(env.simple(ledger.name, body, principal="reader"), "RBAC_GATE")
    assert body_["error"]["reason"]
    assert snapshot(ledger) == before


def expected_effect(coll: Collection[dict[str, Any]], body: dict[str, Any]) -> int:
    """What PyMongo says the same write affects, on a scratch copy of the collection."""
    scratch = coll.database[f"{coll.name}_copy"]
    scratch.drop()
    scratch.insert_many(snapshot(coll))
    try:
        op, flt = body["operation"], body.get("filter", {})
        if op == "insertOne":
            return 1 if scratch.insert_one(dict(body["document"])).inserted_id else 0
        if op == "insertMany":
            return len(scratch.insert_many([dict(d) for d in body["documents"]]).inserted_ids)
        if op == "updateOne":
            return scratch.update_one(flt, body["update"]).modified_count
        if op == "updateMany":
            return scratch.update_many(flt, body["update"]).modified_count
        if op == "replaceOne":
            return scratch.replace_one(flt, body["replacement"]).modified_count
        if op == "deleteOne":
            return scratch.delete_one(flt).deleted_count
        return scratch.delete_many(flt).deleted_count
    finally:
        scratch.drop()


@pytest.mark.parametrize(("name", "body"), WRITES, ids=IDS)
def test_writer_writes_and_counts(env: Env, ledger: Any, name: str, body: dict[str, Any]) -> None:
    affected = expected_effect(ledger, body)
    assert affected >= 1
    before = snapshot(ledger)
    r = env.simple(ledger.name, body, principal="writer")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["rows_affected"] == affected
    after = snapshot(ledger)
    op, flt = body["operation"], body.get("filter", {})
    strip = [{k: v for k, v in d.items() if k != "_id"} for d in after]
    if op.startswith("insert"):
        docs = [body["document"]] if op == "insertOne" else body["documents"]
        assert len(after) == len(before) + len(docs)
        assert all(d in strip for d in docs)
    elif op.startswith("delete"):
        assert len(after) == len(before) - affected
        assert ledger.count_documents(flt) == 0 if op == "deleteMany" else True
    else:
        assert len(after) == len(before) and after != before
        changed = [a for a, b in zip(after, before, strict=True) if a != b]
        assert len(changed) == affected


@pytest.mark.parametrize(
    "body",
    [
        {"operation": "deleteMany", "filter": {}},
        {"operation": "deleteMany"},
        {"operation": "updateMany", "filter": {}, "update": {"$set": {"v": 0}}},
    ],
    ids=["deleteMany-empty", "deleteMany-no-filter", "updateMany-empty"],
)
def test_unbounded_write_needs_a(env: Env, ledger: Any, body: dict[str, Any]) -> None:
    before = snapshot(ledger)
    for principal in ("reader", "writer"):
        assert_blocked(env.simple(ledger.name, body, principal=principal), "RBAC_GATE")
        assert snapshot(ledger) == before
    r = env.simple(ledger.name, body, principal="admin")
    if "filter" not in body:
        # an absent filter is refused before anything runs: `{}` says "every document"
        blocked = assert_blocked(r, "AST_CHECKER")
        assert "needs a `filter`" in blocked["error"]["reason"]
        assert blocked["error"]["suggestion"].startswith("use {} to mean every document")
        assert snapshot(ledger) == before
        return
    assert r.status_code == 200, r.text
    expected = (
        len(before) if body["operation"] == "deleteMany" else sum(1 for d in before if d["v"] != 0)
    )
    assert r.json()["data"]["rows_affected"] == expected
    if body["operation"] == "deleteMany":
        assert ledger.count_documents({}) == 0
    else:
        assert [d["v"] for d in snapshot(ledger)] == [0] * len(before)

"""The hostile MQL corpus through the real server against nx-27017: every entry blocked by the
stage the corpus names, and the database exactly as it was afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from tests.e2e_mongo.conftest import Env
from tests.helpers import assert_blocked
from tests.safety.conftest import load_corpus

pytestmark = [pytest.mark.mongodb, pytest.mark.postgres]

HOSTILE = load_corpus("hostile_mql.yaml")


def state(db: Database[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every collection's documents (by _id), the collection list being the keys."""
    return {
        name: sorted(db[name].find({}), key=lambda d: str(d["_id"]))
        for name in sorted(db.list_collection_names())
    }


def test_corpus_is_big_enough() -> None:
    assert len(HOSTILE) >= 40


@pytest.fixture(scope="module")
def before(env: Env) -> dict[str, list[dict[str, Any]]]:
    snap = state(env.mongo)
    assert {"items", "orders", "users", "secrets", "audit_log"} <= set(snap)
    return snap


@pytest.mark.parametrize("entry", HOSTILE, ids=[f"{i}-{e['note']}" for i, e in enumerate(HOSTILE)])
def test_hostile_entry_blocked_over_http(
    env: Env, entry: dict[str, Any], before: dict[str, Any]
) -> None:
    r = env.simple(entry["table"], entry["query"], principal="corpus")
    body = assert_blocked(r, entry["expect_stage"])
    assert body["error"]["reason"]
    assert state(env.mongo) == before, entry["note"]


def test_hostile_entries_also_blocked_with_language_omitted(
    env: Env, before: dict[str, Any]
) -> None:
    for entry in HOSTILE:
        r = env.simple(entry["table"], entry["query"], principal="corpus", language=None)
        assert_blocked(r, entry["expect_stage"])
    assert state(env.mongo) == before

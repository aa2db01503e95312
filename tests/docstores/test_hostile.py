"""The hostile couchdb and dynamo corpora through the real server: every entry blocked by the
stage the corpus names, and every database and table exactly as it was afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from tests.docstores import seed
from tests.docstores.conftest import Env
from tests.helpers import assert_blocked
from tests.safety.conftest import load_corpus

COUCH = load_corpus("hostile_couchdb.yaml")
DYNAMO = load_corpus("hostile_dynamo.yaml")


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{i}-{e['note']}" for i, e in enumerate(entries)]


def test_corpora_are_big_enough() -> None:
    assert len(COUCH) >= 40 and len(DYNAMO) >= 40


@pytest.fixture(scope="module")
def couch_before(env: Env) -> dict[str, Any]:
    snap = seed.couch_state(env.couch_url)
    assert {"items", "orders", "users", "secrets", "audit_log"} <= set(snap)
    return snap


@pytest.fixture(scope="module")
def dynamo_before(env: Env) -> dict[str, Any]:
    snap = seed.dynamo_state(env.dynamo_endpoint)
    assert {"items", "orders", "users", "secrets", "audit_log"} <= set(snap)
    return snap


@pytest.mark.couchdb
@pytest.mark.parametrize("entry", COUCH, ids=ids(COUCH))
def test_couchdb_entry_blocked(env: Env, entry: dict[str, Any], couch_before) -> None:
    r = env.simple("couch", entry["table"], entry["query"], principal="corpus")
    body = assert_blocked(r, entry["expect_stage"])
    assert body["error"]["reason"]
    assert seed.couch_state(env.couch_url) == couch_before, entry["note"]


@pytest.mark.dynamodb
@pytest.mark.parametrize("entry", DYNAMO, ids=ids(DYNAMO))
def test_dynamo_entry_blocked(env: Env, entry: dict[str, Any], dynamo_before) -> None:
    r = env.simple("dyn", entry["table"], entry["query"], principal="corpus")
    body = assert_blocked(r, entry["expect_stage"])
    assert body["error"]["reason"]
    assert seed.dynamo_state(env.dynamo_endpoint) == dynamo_before, entry["note"]


def test_entries_also_blocked_with_language_omitted(
    env: Env, couch_before: dict[str, Any], dynamo_before: dict[str, Any]
) -> None:
    for database, entries in (("couch", COUCH), ("dyn", DYNAMO)):
        for entry in entries:
            r = env.simple(database, entry["table"], entry["query"], "corpus", language=None)
            assert_blocked(r, entry["expect_stage"])
    assert seed.couch_state(env.couch_url) == couch_before
    assert seed.dynamo_state(env.dynamo_endpoint) == dynamo_before

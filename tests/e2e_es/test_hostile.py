"""The hostile es_dsl corpus through the real server against Elasticsearch: every entry blocked
by the stage the corpus names, and the cluster exactly as it was afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e_es.conftest import INDICES, Env
from tests.elasticsearch.conftest import Raw
from tests.es_server import ES_SETUP_TIMEOUT
from tests.helpers import assert_blocked
from tests.safety.conftest import load_corpus

pytestmark = [pytest.mark.elasticsearch, pytest.mark.postgres, ES_SETUP_TIMEOUT]

HOSTILE = load_corpus("hostile_es_dsl.yaml")


def state(raw: Raw) -> dict[str, Any]:
    """Every index (with its mapping and settings that matter) and every document."""
    out: dict[str, Any] = {}
    cat = raw.req("GET", "/_cat/indices", format="json", h="index,status")
    out["indices"] = sorted((r["index"], r["status"]) for r in cat)
    out["aliases"] = raw.req("GET", "/_alias")
    out["templates"] = raw.req("GET", "/_template")
    out["scripts"] = raw.req("GET", "/_cluster/state/metadata")["metadata"].get("stored_scripts")
    for name in INDICES:
        out[f"{name}.mapping"] = raw.req("GET", f"/{name}/_mapping")
        out[f"{name}.blocks"] = raw.req("GET", f"/{name}/_settings")[name]["settings"]["index"].get(
            "blocks"
        )
        res = raw.search(name, {"size": 1000, "sort": ["_doc"], "seq_no_primary_term": True})
        out[name] = [(h["_id"], h["_source"], h["_seq_no"]) for h in res["hits"]["hits"]]
    return out


def test_corpus_is_big_enough() -> None:
    assert len(HOSTILE) >= 50


@pytest.fixture(scope="module")
def before(env: Env) -> dict[str, Any]:
    snap = state(env.raw)
    assert snap["secrets"] and snap["items"]
    return snap


@pytest.mark.parametrize("entry", HOSTILE, ids=[f"{i}-{e['note']}" for i, e in enumerate(HOSTILE)])
def test_hostile_entry_blocked_over_http(env: Env, entry: dict[str, Any], before: Any) -> None:
    r = env.simple(entry["table"], entry["query"], principal="corpus")
    body = assert_blocked(r, entry["expect_stage"])
    assert body["error"]["reason"]
    assert state(env.raw) == before, entry["note"]

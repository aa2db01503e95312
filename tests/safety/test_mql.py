"""MQL through the pipeline: the hostile corpus blocked by its stage, the benign one passing,
and the guardrails' rewrite of `limit`, `$limit` and `maxTimeMS`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.config import Config
from tests.safety.conftest import load_corpus, run

HOSTILE = load_corpus("hostile_mql.yaml")
BENIGN = load_corpus("benign_mql.yaml")


def test_corpus_sizes() -> None:
    assert len({e["query"] for e in HOSTILE}) >= 40
    assert {e["expect_stage"] for e in HOSTILE} == {
        "PROMPT_GUARD",
        "RBAC_GATE",
        "AST_CHECKER",
        "INJECTION_ANALYSER",
    }


@pytest.mark.parametrize("entry", HOSTILE, ids=[e["note"] for e in HOSTILE])
def test_hostile_mql_is_blocked(config: Config, entry: dict[str, Any]) -> None:
    outcome = run(config, entry["query"], entry["table"], "mql")
    assert outcome.block is not None, entry
    assert outcome.block.stage == entry["expect_stage"], (entry["note"], outcome.block)
    assert outcome.steps == []


@pytest.mark.parametrize("entry", BENIGN, ids=[e["note"] for e in BENIGN])
def test_benign_mql_passes(config: Config, entry: dict[str, Any]) -> None:
    outcome = run(config, entry["query"], entry["table"], "mql")
    assert outcome.block is None, (entry, outcome.block)
    (step,) = outcome.steps
    assert step.language == "mql" and step.dialect == "mql"
    body = json.loads(step.text)
    assert body["maxTimeMS"] == 20_000  # safety.query_timeout_seconds, in ms
    assert body["operation"] == json.loads(entry["query"])["operation"]


def test_find_limit_capped_and_kept(config: Config) -> None:
    (step,) = run(config, '{"operation": "find", "filter": {}}', "items", "mql").steps
    assert json.loads(step.text)["limit"] == 101 and step.row_cap == 100
    (step,) = run(config, '{"operation": "find", "filter": {}, "limit": 7}', "items", "mql").steps
    assert json.loads(step.text)["limit"] == 7
    (step,) = run(
        config, '{"operation": "find", "filter": {}, "limit": 5000}', "items", "mql"
    ).steps
    assert json.loads(step.text)["limit"] == 101


def test_aggregate_limit_appended_or_lowered(config: Config) -> None:
    q = '{"operation": "aggregate", "pipeline": [{"$match": {}}]}'
    (step,) = run(config, q, "items", "mql").steps
    assert json.loads(step.text)["pipeline"] == [{"$match": {}}, {"$limit": 101}]
    q = '{"operation": "aggregate", "pipeline": [{"$match": {}}, {"$limit": 5000}]}'
    (step,) = run(config, q, "items", "mql").steps
    assert json.loads(step.text)["pipeline"][-1] == {"$limit": 101}
    q = '{"operation": "aggregate", "pipeline": [{"$limit": 3}]}'
    (step,) = run(config, q, "items", "mql").steps
    assert json.loads(step.text)["pipeline"] == [{"$limit": 3}]


def test_mql_writes_are_not_readonly_and_uncapped(config: Config) -> None:
    q = '{"operation": "updateOne", "filter": {"id": 1}, "update": {"$set": {"status": "x"}}}'
    (step,) = run(config, q, "orders", "mql").steps
    assert step.operation == "UPDATE" and step.readonly is False and step.row_cap is None
    assert "limit" not in json.loads(step.text)


def test_lookup_targets_listed_as_tables(config: Config) -> None:
    q = (
        '{"operation": "aggregate", "pipeline": [{"$lookup": {"from": "items", '
        '"localField": "id", "foreignField": "id", "as": "i"}}]}'
    )
    (step,) = run(config, q, "orders", "mql").steps
    assert step.tables == ["orders", "items"]


def test_sql_language_for_a_mongodb_database_is_blocked(config: Config) -> None:
    outcome = run(config, "SELECT 1", "items", "mql", language="sql")
    assert outcome.block is not None and outcome.block.stage == "PROMPT_GUARD"
    assert "speaks mql" in outcome.block.reason


def test_sort_as_list_of_pairs_is_checked_like_an_object(config: Config) -> None:
    """The list form `[["field", 1]]` passes, and its fields meet the column denies: a
    sort by a denied column is blocked in both forms."""
    ok = '{"operation": "find", "projection": {"name": 1}, "sort": [["name", 1], ["id", -1]]}'
    outcome = run(config, ok, "users", "mql")
    assert outcome.block is None, outcome.block
    for sort in ('{"ssn": 1}', '[["ssn", 1]]'):
        q = f'{{"operation": "find", "projection": {{"name": 1}}, "sort": {sort}}}'
        outcome = run(config, q, "users", "mql")
        assert outcome.block is not None and outcome.block.stage == "RBAC_GATE", sort
        assert "ssn" in outcome.block.reason
    bad = run(config, '{"operation": "find", "sort": [["name"]]}', "items", "mql")
    assert bad.block is not None and "list of [field, direction] pairs" in bad.block.reason

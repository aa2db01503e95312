"""Graph checks: every invalid DAG fails before anything runs, with a message naming the step."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import InvalidQuery, StepUnknownDatabase
from engine.ir import FederatedQuery, decode
from engine.validate import Link, validate

DBS = {"pg", "my"}


def q(*steps: dict[str, Any], merge: str | None = "SELECT * FROM s0") -> FederatedQuery:
    full = [{"database": "pg", "table": "t", "query": "SELECT 1"} | s for s in steps]
    return FederatedQuery(steps=[decode_step(s) for s in full], merge=merge)


def decode_step(s: dict[str, Any]) -> Any:
    import msgspec

    from engine.ir import StepSpec

    return msgspec.convert(s, StepSpec)


def test_decoder_rejects_unknown_fields() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="depend_on"):
        decode(
            b'{"steps":[{"step_id":"s0","database":"pg","table":"t","query":"q","depend_on":[]}]}'
        )


def test_valid_links_resolve() -> None:
    links = validate(
        q(
            {"step_id": "s0"},
            {"step_id": "s1", "depends_on": ["s0"], "link_from": "id", "link_to": "pid"},
            {"step_id": "s2", "depends_on": ["s0", "s1"], "link_from": "s1.x", "link_to": "y"},
            merge="SELECT * FROM s0 JOIN s1 ON true JOIN s2 ON true",
        ),
        DBS,
    )
    assert links == {"s1": Link("s0", "id", "pid"), "s2": Link("s1", "x", "y")}


@pytest.mark.parametrize(
    ("query", "pattern"),
    [
        (FederatedQuery(steps=[]), "at least one step"),
        (q({"step_id": "s0"}, {"step_id": "s0"}), "duplicate step_id 's0'"),
        (q({"step_id": "S0"}, {"step_id": "s0"}), "duplicate step_id 's0'"),
        (q({"step_id": "0s"}), "step_id '0s' is not a valid table name"),
        (q({"step_id": "s-1"}), "step_id 's-1'"),
        (q({"step_id": "s0", "depends_on": ["s9"]}), "step 's0' depends on unknown step 's9'"),
        (q({"step_id": "s0", "depends_on": ["s0"]}), "step 's0' depends on itself"),
        (
            q(
                {"step_id": "s0", "depends_on": ["s1"]},
                {"step_id": "s1", "depends_on": ["s0"]},
                merge="SELECT 1 FROM s0, s1",
            ),
            r"cycle: s(0|1) -> s(1|0) -> s\1",
        ),
        (q({"step_id": "s0", "link_from": "id", "link_to": "x"}), "step 's0' has a link but no"),
        (
            q(
                {"step_id": "s0"},
                {"step_id": "s1", "depends_on": ["s0"], "link_from": "id"},
                merge="SELECT 1 FROM s1",
            ),
            "step 's1' sets only one of link_from/link_to",
        ),
        (
            q(
                {"step_id": "a"},
                {"step_id": "b"},
                {"step_id": "s1", "depends_on": ["a", "b"], "link_from": "id", "link_to": "x"},
                merge="SELECT 1 FROM s1",
            ),
            "step 's1': link_from 'id' is ambiguous",
        ),
        (
            q(
                {"step_id": "a"},
                {"step_id": "b"},
                {"step_id": "s1", "depends_on": ["a"], "link_from": "b.id", "link_to": "x"},
                merge="SELECT 1 FROM s1",
            ),
            "names step 'b', which is not one of its parents",
        ),
        (q({"step_id": "s0"}, {"step_id": "s1"}, merge=None), "2 steps need a merge"),
        (
            q({"step_id": "s0"}, merge="SELECT * FROM s0 JOIN s7 ON true"),
            "merge names unknown step table 's7'",
        ),
        (q({"step_id": "s0"}, merge="SELECT 1; SELECT 2"), "exactly one statement"),
        (q({"step_id": "s0"}, merge="SELECT * FROM s0 WHERE"), "not valid DuckDB SQL"),
    ],
)
def test_invalid(query: FederatedQuery, pattern: str) -> None:
    with pytest.raises(InvalidQuery, match=pattern):
        validate(query, DBS)


def test_unknown_database_names_the_step() -> None:
    with pytest.raises(StepUnknownDatabase, match="step 's0': database 'nope'") as info:
        validate(q({"step_id": "s0", "database": "nope"}), DBS)
    assert info.value.code == "unknown_database"


def test_cte_names_are_not_step_tables() -> None:
    validate(q({"step_id": "s0"}, merge="WITH x AS (SELECT * FROM s0) SELECT * FROM x"), DBS)

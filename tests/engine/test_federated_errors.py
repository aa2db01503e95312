"""Failures at the engine boundary: each becomes one clear error, and nothing is left behind."""

from __future__ import annotations

import msgspec
import pytest

from connectors.errors import QueryTimedOut
from engine.errors import InvalidQuery, MergeFailed, MergeReadsStripped, StepFailed
from engine.ir import FederatedQuery
from engine.sink import Sink
from tests.engine.conftest import Run
from tests.engine.support import checked

pytestmark = [pytest.mark.postgres, pytest.mark.sqlite]


def fq(steps: list[dict[str, object]], merge: str | None = None) -> FederatedQuery:
    return msgspec.convert({"steps": steps, "merge": merge}, FederatedQuery)


CUSTOMERS = {
    "step_id": "s0",
    "database": "pg",
    "table": "customers",
    "query": "SELECT id, region FROM eng.customers",
}
ITEMS = {
    "step_id": "s1",
    "database": "lite",
    "table": "items",
    "query": "SELECT id, order_id FROM items",
    "depends_on": ["s0"],
    "link_from": "id",
    "link_to": "order_id",
}


async def test_merge_failure_keeps_duckdbs_message(run: Run, sink: Sink) -> None:
    with pytest.raises(MergeFailed) as info:
        await run(fq([CUSTOMERS], "SELECT no_such_column FROM s0"))
    assert info.value.code == "merge_failed"
    assert "no_such_column" in info.value.message
    assert "req_" not in info.value.message  # the internal schema name stays internal
    assert sink.schemas() == []


async def test_stripped_step_and_its_dependants_are_dropped(run: Run) -> None:
    q = fq([CUSTOMERS, ITEMS], "SELECT count(*) AS n FROM s0")
    only_root = {k: v for k, v in checked(q).items() if k == "s0"}
    result = await run(q, checked_steps=only_root)
    assert [s.step_id for s in result.steps] == ["s0"]
    assert result.dropped_steps == ["s1"]
    assert any("step s1 was dropped" in w for w in result.warnings)


async def test_merge_over_a_stripped_step_fails_clearly(run: Run) -> None:
    q = fq([CUSTOMERS, ITEMS], "SELECT * FROM s0 JOIN s1 ON s1.order_id = s0.id")
    only_root = {k: v for k, v in checked(q).items() if k == "s0"}
    with pytest.raises(MergeReadsStripped, match="'s1', which was stripped"):
        await run(q, checked_steps=only_root)


async def test_missing_link_column_names_the_step(run: Run, sink: Sink) -> None:
    bad = dict(ITEMS, link_from="nope")
    with pytest.raises(InvalidQuery, match="link_from 'nope': step 's0' has no such column"):
        await run(fq([CUSTOMERS, bad], "SELECT * FROM s1"))
    assert sink.schemas() == []


async def test_step_timeout_is_a_step_failure(run: Run, sink: Sink) -> None:
    q = fq(
        [
            {
                "step_id": "slow",
                "database": "pg",
                "table": "customers",
                "query": "SELECT pg_sleep(5) AS s",
            }
        ]
    )
    with pytest.raises(StepFailed) as info:
        await run(q, checked_steps=checked(q, timeout=0.5))
    assert info.value.step_id == "slow"
    assert isinstance(info.value.cause, QueryTimedOut)
    assert sink.schemas() == []


async def test_database_error_is_a_step_failure(run: Run) -> None:
    q = fq(
        [CUSTOMERS, dict(ITEMS, query="SELECT id, order_id, missing FROM items")],
        "SELECT * FROM s1",
    )
    with pytest.raises(StepFailed, match="step 's1' on database 'lite' failed: .*missing"):
        await run(q)


async def test_dry_run_plans_without_running(run: Run) -> None:
    q = fq([CUSTOMERS, ITEMS], "SELECT * FROM s1")
    q = msgspec.structs.replace(q, dry_run=True)
    result = await run(q)
    assert result.row_count == 0 and result.steps == []
    assert "s1: lite.items [link s0.id -> s1.order_id]" in result.plan

"""Over MCP as over REST, a principal's stored results and runs are its own (another's are
not found, not forbidden), and the catalog shows only what the principal may read."""

from __future__ import annotations

import json

import anyio
import pytest

from tests.mcp.conftest import CLIENTS, OTHER, Env
from tests.mcp.test_tools import PAGE_ALL, call

pytestmark = pytest.mark.postgres


async def test_another_principals_results_and_runs_are_not_found(mcp_env: Env, transport: str):
    run_config = {
        "steps": [
            {"step_id": "e", "database": "pg", "table": "events", "query": "SELECT id FROM events"}
        ]
    }
    async with CLIENTS[transport](mcp_env) as analyst:
        err, mine, _ = await call(analyst, "query", PAGE_ALL)
        assert not err and mine["next_cursor"]
        err, accepted, _ = await call(analyst, "submit_run", {"config": run_config})
        assert not err, accepted
        run_id = accepted["run_id"]
        with anyio.fail_after(30):
            while True:
                _, run, _ = await call(analyst, "get_run", {"run_id": run_id})
                if run["status"] == "completed":
                    break
                await anyio.sleep(0.1)

    async with CLIENTS[transport](mcp_env, OTHER) as other:
        for args in (
            {"cursor": mine["next_cursor"]},
            {"request_id": mine["request_id"]},
            {"request_id": run_id},
        ):
            err, body, text = await call(other, "get_results", args)
            assert err and body["http_status"] == 404, (args, body)
            assert "amount" not in text and "rows" not in body
        for tool in ("get_run", "cancel_run"):
            err, body, _ = await call(other, tool, {"run_id": run_id})
            assert err and body["http_status"] == 404, (tool, body)

    async with CLIENTS[transport](mcp_env) as analyst:  # still there, still the owner's
        err, page, _ = await call(analyst, "get_results", {"cursor": mine["next_cursor"]})
        assert not err and len(page["rows"]) > 0
        err, run, _ = await call(analyst, "get_run", {"run_id": run_id})
        assert not err and run["status"] == "completed"


async def test_the_catalog_shows_only_what_the_principal_may_read(mcp_env: Env, transport: str):
    async with CLIENTS[transport](mcp_env) as client:
        err, dbs, text = await call(client, "list_databases", {"size": 100})
        assert not err
        pg = next(d for d in dbs["databases"] if d["name"] == "pg")
        assert [t["name"] for t in pg["tables"]] == ["events"]  # secrets: none
        assert "secrets" not in text
        entry = json.loads((await client.read_resource("sluice://databases/pg")).contents[0].text)
        assert [t["name"] for t in entry["tables"]] == ["events"]
        err, body, _ = await call(client, "describe_table", {"database": "pg", "table": "secrets"})
        assert err and body["http_status"] == 404 and body["error"]["code"] == "unknown_table"
        assert "secrets" not in (body["error"]["suggestion"] or "")  # as absent as a missing one

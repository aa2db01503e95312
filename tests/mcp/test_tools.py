"""Every tool over both transports with the SDK's own client, checked against what the REST
API answers for the same request (one service behind both), and against the audit log."""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from api.envelopes import SimpleQueryRequest
from api.run_envelopes import RunSubmit
from engine.ir import FederatedQuery, StepSpec
from safety.languages import registry as languages
from tests.mcp.conftest import ANALYST, CLIENTS, EVENTS, INLINE_ROWS, Env, audit_lines

pytestmark = pytest.mark.postgres

TOOL_NAMES = {
    "list_databases",
    "describe_table",
    "query_simple",
    "query",
    "get_results",
    "submit_run",
    "get_run",
    "cancel_run",
}
PAGE_ALL = {
    "steps": [
        {
            "step_id": "e",
            "database": "pg",
            "table": "events",
            "query": "SELECT id, amount FROM events",
        }
    ],
    "merge": "SELECT id, amount FROM e ORDER BY id",
}


def rest(env: Env, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ANALYST}"}
    return httpx.request(method, f"{env.http.url}{path}", headers=headers, timeout=30, **kw)


async def call(client: Any, name: str, args: dict[str, Any]) -> tuple[bool, dict[str, Any], str]:
    got = await client.call_tool(name, args)
    assert len(got.content) == 1 and got.content[0].type == "text"
    return bool(got.is_error), got.structured_content, got.content[0].text


def data_dir(env: Env, transport: str) -> Any:
    return env.http.data_dir if transport == "http" else env.stdio_data


def audited(env: Env, transport: str, request_id: str) -> dict[str, Any]:
    """The audit line of a request (the writer flushes in the background: wait for it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        path = data_dir(env, transport) / "audit.jsonl"
        if path.exists():
            lines = [
                a for a in audit_lines(data_dir(env, transport)) if a["request_id"] == request_id
            ]
            if lines:
                assert len(lines) == 1
                return lines[0]
        time.sleep(0.05)
    raise AssertionError(f"no audit line for {request_id}")


async def test_tools_are_listed_with_schemas_of_the_rest_bodies(mcp_env: Env, transport: str):
    async with CLIENTS[transport](mcp_env) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOL_NAMES
    for name, body in (
        ("query_simple", SimpleQueryRequest),
        ("query", FederatedQuery),
        ("submit_run", RunSubmit),
    ):
        schema = tools[name].input_schema
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert set(schema["properties"]) == set(body.__struct_fields__), name
        required = {f.name for f in msgspec.structs.fields(body) if f.required}
        assert set(schema["required"]) == required, name
    assert set(tools["query_simple"].input_schema["required"]) == {"database", "table", "query"}
    step = tools["query"].input_schema["$defs"]["StepSpec"]
    assert set(step["properties"]) == set(StepSpec.__struct_fields__)
    # each language's body shapes, from its language object
    shapes = [e for n in languages.names() for e in languages.get(n).examples]
    assert len(shapes) >= 5
    for name in ("query_simple", "query"):
        assert all(e in tools[name].description for e in shapes), name
    assert tools["list_databases"].annotations.read_only_hint is True
    assert tools["query_simple"].annotations.read_only_hint is False  # writes can be granted
    assert tools["cancel_run"].annotations.destructive_hint is True


async def test_catalog_tools_answer_what_rest_answers(mcp_env: Env, transport: str):
    async with CLIENTS[transport](mcp_env) as client:
        err, dbs, text = await call(client, "list_databases", {"size": 100})
        assert not err
        assert dbs == rest(mcp_env, "GET", "/v1/databases?size=100").json()
        assert [d["name"] for d in dbs["databases"]] == ["pg", "lite", "duck"]
        # `secrets` is denied to every principal: the catalog does not list it (issue 11)
        assert "- pg (postgresql, speaks sql, reachable): events\n" in text
        assert "secrets" not in text

        err, table, text = await call(
            client, "describe_table", {"database": "pg", "table": "events"}
        )
        assert not err
        assert table == rest(mcp_env, "GET", "/v1/databases/pg/tables/events").json()
        assert "- id: " in text and "(pk, not null)" in text

        err, body, text = await call(client, "describe_table", {"database": "pg", "table": "nope"})
        assert err and body["status"] == "error" and body["http_status"] == 404
        assert body["error"]["code"] == "unknown_table"
        assert body["error"] == rest(mcp_env, "GET", "/v1/databases/pg/tables/nope").json()["error"]
        assert text.startswith("error unknown_table: ")


async def test_query_simple_answers_like_rest_and_is_audited(mcp_env: Env, transport: str):
    q = {
        "database": "pg",
        "table": "events",
        "query": "SELECT id, kind, amount FROM events WHERE id <= 3 ORDER BY id",
    }
    async with CLIENTS[transport](mcp_env) as client:
        err, body, text = await call(client, "query_simple", q)
        err_dry, dry, dry_text = await call(client, "query_simple", {**q, "dry_run": True})
    assert not err_dry and dry["status"] == "dry_run"
    assert dry["steps"][0]["row_cap"] == 5000 and "nothing executed" in dry_text
    assert dry["steps"][0]["rewritten"] in dry_text
    assert not err, body
    want = rest(mcp_env, "POST", "/v1/query/simple", json=q).json()
    assert body["data"] == want["data"]
    assert body["data"]["rows"] == [
        {"id": 1, "kind": "kind 1", "amount": 0.25},
        {"id": 2, "kind": "kind 2", "amount": 0.5},
        {"id": 3, "kind": "kind 3", "amount": 0.75},
    ]
    assert body["next_cursor"] is None
    assert body["metadata"]["transport"] == f"mcp/{transport}"
    assert "3 of 3 row(s)" in text and "truncated: false" in text
    assert "| 2 | kind 2 | 0.50 |" in text  # numeric(10,2): its exact digits
    line = audited(mcp_env, transport, body["request_id"])
    assert line["transport"] == f"mcp/{transport}"
    assert line["principal"] == "analyst"  # the token's principal, on stdio as over HTTP
    assert line["blocked"] is None and line["rows"] == 3


async def test_blocked_query_is_a_tool_error_carrying_the_envelope(mcp_env: Env, transport: str):
    q = {"database": "pg", "table": "events", "query": "DELETE FROM events WHERE id = 1"}
    async with CLIENTS[transport](mcp_env) as client:
        err, body, text = await call(client, "query_simple", q)
    assert err
    assert body["status"] == "blocked" and body["http_status"] == 403
    want = rest(mcp_env, "POST", "/v1/query/simple", json=q)
    assert want.status_code == 403
    assert body["error"] == want.json()["error"]  # stage, reason, suggestion: the same
    assert body["error"]["stage"] == "RBAC_GATE"
    assert "DELETE" in body["error"]["reason"] and body["error"]["suggestion"]
    assert text == (
        f"blocked by RBAC_GATE: {body['error']['reason']}\n"
        f"suggestion: {body['error']['suggestion']}"
    )
    line = audited(mcp_env, transport, body["request_id"])
    assert line["blocked"]["stage"] == "RBAC_GATE" and line["transport"] == f"mcp/{transport}"
    assert rest(
        mcp_env, "POST", "/v1/query/simple", json={**q, "query": "SELECT count(*) AS n FROM events"}
    ).json()["data"]["rows"] == [{"n": EVENTS}]  # nothing deleted


async def test_a_table_the_principal_may_not_read_is_refused(mcp_env: Env, transport: str):
    simple = {"database": "pg", "table": "secrets", "query": "SELECT token FROM secrets"}
    joined = {
        "steps": [
            {"step_id": "e", "database": "pg", "table": "events", "query": "SELECT id FROM events"},
            {
                "step_id": "s",
                "database": "pg",
                "table": "secrets",
                "query": "SELECT * FROM secrets",
            },
        ],
        "merge": "SELECT * FROM e JOIN s USING (id)",
    }
    async with CLIENTS[transport](mcp_env) as client:
        err, body, text = await call(client, "query_simple", simple)
        assert err and body["status"] == "blocked", body
        assert body["error"]["stage"] == "RBAC_GATE"
        assert "secrets" in body["error"]["reason"]
        assert "hunter2" not in text and "hunter2" not in str(body)
        # a federated step on it is stripped by the policy, and the merge that reads it fails
        err, body, text = await call(client, "query", joined)
    assert err and "hunter2" not in text and "hunter2" not in str(body)
    want = rest(mcp_env, "POST", "/v1/query", json=joined)
    assert body["http_status"] == want.status_code >= 400
    assert body["error"] == want.json()["error"]
    assert "stripped by the safety policy" in body["error"]["message"]


async def test_a_large_result_is_paged_to_the_end(mcp_env: Env, transport: str):
    async with CLIENTS[transport](mcp_env) as client:
        err, body, text = await call(client, "query", PAGE_ALL)
        assert not err, body
        d = body["data"]
        assert d["row_count"] == EVENTS and d["truncated"] is True
        assert len(d["rows"]) == INLINE_ROWS
        assert body["next_cursor"] and f"cursor {body['next_cursor']!r}" in text
        ids = [r["id"] for r in d["rows"]]
        cursor, pages = body["next_cursor"], 0
        while cursor is not None:
            err, page, _ = await call(client, "get_results", {"cursor": cursor})
            assert not err, page
            ids += [r["id"] for r in page["rows"]]
            cursor, pages = page["next_cursor"], pages + 1
            assert page["has_more"] is (cursor is not None)
        assert ids == list(range(1, EVENTS + 1))  # every row once, in order, none skipped
        assert pages == math.ceil((EVENTS - INLINE_ROWS) / INLINE_ROWS)

        # by request id and page size, as REST pages it
        rid, seen, page_no = body["request_id"], 0, 1
        while True:
            args = {"request_id": rid, "page": page_no, "size": 1000}
            err, page, _ = await call(client, "get_results", args)
            assert not err and page["total_rows"] == EVENTS
            if transport == "http":
                assert {k: v for k, v in page.items() if k != "next_cursor"} == rest(
                    mcp_env, "GET", f"/v1/results/{rid}?page={page_no}&size=1000"
                ).json()
            seen += len(page["rows"])
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            page_no += 1
        assert (seen, page_no) == (EVENTS, 3)

        err, bad, _ = await call(client, "get_results", {"cursor": "not-a-cursor"})
        assert err and bad["error"]["code"] == "invalid_request" and bad["http_status"] == 400
        err, bad, _ = await call(client, "get_results", {})
        assert err and "cursor or a request_id" in bad["error"]["message"]


async def test_runs_are_submitted_followed_paged_and_cancelled(mcp_env: Env, transport: str):
    yaml = (
        "steps:\n  - step_id: e\n    database: pg\n    table: events\n"
        "    query: SELECT id, kind FROM events WHERE id <= 250\n"
        "merge: SELECT kind, count(*) AS n FROM e GROUP BY kind ORDER BY kind\n"
    )
    async with CLIENTS[transport](mcp_env) as client:
        err, accepted, text = await call(
            client, "submit_run", {"config": yaml, "name": f"mcp-{transport}"}
        )
        assert not err, accepted
        run_id = accepted["run_id"]
        assert accepted["status"] in ("queued", "running", "completed") and run_id in text
        with anyio.fail_after(30):
            while True:
                err, run, text = await call(client, "get_run", {"run_id": run_id})
                assert not err and run["status"] in ("queued", "running", "completed"), run
                if run["status"] == "completed":
                    break
                await anyio.sleep(0.1)
        assert run["name"] == f"mcp-{transport}" and run["records_written"] == 7
        assert run["steps"][0]["rows"] == 250
        err, page, _ = await call(client, "get_results", {"cursor": run["next_cursor"]})
        assert not err and page["request_id"] == run_id
        assert sum(r["n"] for r in page["rows"]) == 250 and len(page["rows"]) == 7

        err, done, text = await call(client, "cancel_run", {"run_id": run_id})
        assert not err and done["cancel_accepted"] is False and done["status"] == "completed"
        assert text.startswith("already completed")

        for tool in ("get_run", "cancel_run"):
            err, missing, _ = await call(client, tool, {"run_id": "run_doesnotexist"})
            assert err and missing["http_status"] == 404, missing

        err, refused, _ = await call(
            client, "submit_run", {"config": yaml.replace("events WHERE", "secrets WHERE")}
        )
        assert err and refused["error"]["code"] == "blocked", refused
        assert refused["error"]["details"]["stage"] == "RBAC_GATE"


async def test_bad_arguments_name_what_is_wrong(mcp_env: Env, transport: str):
    async with CLIENTS[transport](mcp_env) as client:
        err, body, text = await call(client, "query_simple", {"database": "pg", "table": "events"})
        assert err and body["error"]["code"] == "invalid_body" and body["http_status"] == 400
        assert "`query`" in body["error"]["message"]
        assert body["error"]["suggestion"] == "see the tool's input schema"
        err, body, _ = await call(
            client, "query_simple", {"database": "pg", "table": "events", "query": "x", "qury": 1}
        )
        assert err and "qury" in body["error"]["message"]
        err, body, _ = await call(client, "list_databases", {"size": 101})
        assert err and "<= 100" in body["error"]["message"]
        err, body, _ = await call(client, "drop_everything", {})
        assert err and body["error"]["code"] == "unknown_tool"
        assert "query_simple" in body["error"]["suggestion"]


async def test_database_schemas_are_resources(mcp_env: Env, transport: str):
    from mcp.shared.exceptions import MCPError

    async with CLIENTS[transport](mcp_env) as client:
        listed = (await client.list_resources()).resources
        assert [str(r.uri) for r in listed] == [
            "sluice://databases/pg",
            "sluice://databases/lite",
            "sluice://databases/duck",
        ]
        assert all(r.mime_type == "application/json" for r in listed)
        got = await client.read_resource("sluice://databases/pg")
        import json

        entry = json.loads(got.contents[0].text)
        want = rest(mcp_env, "GET", "/v1/databases?size=100").json()["databases"][0]
        assert entry == want
        assert [t["name"] for t in entry["tables"]] == ["events"]  # secrets: denied to all
        with pytest.raises(MCPError) as exc:
            await client.read_resource("sluice://databases/nope")
        assert exc.value.code == -32002 and "nope" in exc.value.message

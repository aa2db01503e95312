"""What each transport adds: over HTTP the bearer token and the rate limit of REST, shared
with it; over stdio the token's principal; and the MCP Inspector's CLI (a client written by
the protocol's maintainers, in TypeScript) against `sluice mcp`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.api.conftest import make_files, start_server, stop_server
from tests.mcp.conftest import ANALYST, LIMITED, Env, http_client

pytestmark = pytest.mark.postgres

TOOL_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": "query_simple",
        "arguments": {"database": "lite", "table": "people", "query": "SELECT name FROM people"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}
MCP_HEADERS = {
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": "tools/call",
    "mcp-name": "query_simple",
}


def post_mcp(env: Env, token: str | None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(env.mcp_url, json=TOOL_CALL, headers=headers, timeout=30)


@pytest.mark.parametrize("token", [None, "wrong-" + "x" * 26])
async def test_mcp_over_http_needs_a_listed_token(mcp_env: Env, token: str | None):
    resp = post_mcp(mcp_env, token)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert resp.json()["error"]["code"] == "unauthorized"
    with pytest.raises(BaseExceptionGroup) as exc:  # the SDK's client cannot even connect
        async with http_client(mcp_env, token):
            pass
    assert exc.group_contains(MCPError, match="error response")
    assert post_mcp(mcp_env, ANALYST).status_code == 200


def test_mcp_and_rest_share_one_rate_limit(mcp_env: Env):
    """5 requests a minute for the principal, whichever API they come through."""
    rest = {"database": "lite", "table": "people", "query": "SELECT name FROM people"}
    auth = {"Authorization": f"Bearer {LIMITED}"}
    url = mcp_env.http.url
    codes = []
    for i in range(6):
        if i % 2:
            codes.append(post_mcp(mcp_env, LIMITED).status_code)
        else:
            r = httpx.post(f"{url}/v1/query/simple", json=rest, headers=auth, timeout=30)
            codes.append(r.status_code)
    assert codes == [200] * 5 + [429]
    limited = post_mcp(mcp_env, LIMITED)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    assert post_mcp(mcp_env, ANALYST).status_code == 200  # another principal is not limited


def test_stdio_refuses_a_token_that_is_not_listed(mcp_env: Env):
    got = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "mcp", "--config", str(mcp_env.stdio_config)],
        env={**os.environ, "SLUICE_TOKEN": "wrong-" + "x" * 26},
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert got.returncode == 1 and got.stdout == ""
    assert "not listed under auth.tokens" in got.stderr


def inspect(inspector: Path, env: Env, *args: str) -> dict:
    cmd = [
        str(inspector),
        "--cli",
        "-e",
        f"SLUICE_TOKEN={ANALYST}",
        *args,
        "--",
        sys.executable,
        "-m",
        "sluice.cli",
        "mcp",
        "--config",
        str(env.stdio_config),
    ]
    got = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=env.stdio_config.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    out = got.stdout.strip()
    assert out.startswith("{"), (got.returncode, got.stdout[-2000:], got.stderr[-2000:])
    # the result; after a tool error the Inspector prints an error object of its own too
    decoded, _ = json.JSONDecoder().raw_decode(out)
    return decoded


@pytest.mark.timeout(900)  # the first run npm-installs the Inspector
def test_the_inspector_lists_the_tools_and_calls_one(inspector: Path, mcp_env: Env):
    listed = inspect(inspector, mcp_env, "--method", "tools/list")
    names = [t["name"] for t in listed["tools"]]
    assert names == [
        "list_databases",
        "describe_table",
        "query_simple",
        "query",
        "get_results",
        "submit_run",
        "get_run",
        "cancel_run",
    ]
    simple = next(t for t in listed["tools"] if t["name"] == "query_simple")
    assert simple["inputSchema"]["required"] == ["database", "table", "query"]

    called = inspect(
        inspector,
        mcp_env,
        "--method",
        "tools/call",
        "--tool-name",
        "query_simple",
        "--tool-arg",
        "database=lite",
        "--tool-arg",
        "table=people",
        "--tool-arg",
        "query=SELECT name, age FROM people ORDER BY id",
    )
    assert called.get("isError") is not True, called
    rows = called["structuredContent"]["data"]["rows"]
    assert rows == [
        {"name": "Ada", "age": 36},
        {"name": "Alan", "age": 41},
        {"name": "Grace", "age": 85},
    ]
    assert "| Grace | 85 |" in called["content"][0]["text"]

    blocked = inspect(
        inspector,
        mcp_env,
        "--method",
        "tools/call",
        "--tool-name",
        "query_simple",
        "--tool-arg",
        "database=pg",
        "--tool-arg",
        "table=secrets",
        "--tool-arg",
        "query=SELECT token FROM secrets",
    )
    assert blocked["isError"] is True
    assert blocked["structuredContent"]["error"]["stage"] == "RBAC_GATE"


async def test_a_client_of_the_handshake_protocol_is_served_too(mcp_env: Env):
    """Clients of the 2025 protocol (initialize handshake) over the same /mcp."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {ANALYST}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        transport = streamable_http_client(mcp_env.mcp_url, http_client=http)
        async with Client(transport, mode="legacy") as client:
            assert client.protocol_version.startswith("2025-")
            assert len((await client.list_tools()).tools) == 8
            got = await client.call_tool("query_simple", TOOL_CALL["params"]["arguments"])
    assert not got.is_error
    assert got.structured_content["data"]["rows"] == [
        {"name": "Ada"},
        {"name": "Alan"},
        {"name": "Grace"},
    ]


def test_without_tokens_a_foreign_host_or_origin_is_refused(tmp_path_factory):
    """No tokens: a web page in a local browser must not reach /mcp (DNS rebinding)."""
    folder = tmp_path_factory.mktemp("mcp-open")
    lite, _ = make_files(folder / "files")
    config = f"databases:\n  - name: lite\n    type: sqlite\n    path: {lite}\n"
    config += "permissions:\n  default:\n    lite: {level: R}\n"
    srv = start_server(config, folder)
    try:
        url = f"{srv.url}/mcp"
        ok = httpx.post(url, json=TOOL_CALL, headers=MCP_HEADERS, timeout=30)
        assert ok.status_code == 200 and not ok.json()["result"]["isError"]
        for header, status in (("Host", 421), ("Origin", 403)):
            value = "evil.example" if header == "Host" else "http://evil.example"
            got = httpx.post(url, json=TOOL_CALL, headers={**MCP_HEADERS, header: value})
            assert got.status_code == status, (header, got.text)
            assert "Ada" not in got.text
    finally:
        stop_server(srv)

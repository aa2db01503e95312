"""/openapi.json is a valid OpenAPI 3.1 document (openapi-spec-validator), typed from the
route table and the msgspec types, and usable: a client generated from it (by
openapi-python-client) talks to the real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.api.conftest import Server


def spec_of(server: Server) -> dict:
    r = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert r.status_code == 200
    return r.json()


def test_the_document_is_valid_openapi_3_1(server: Server) -> None:
    spec = spec_of(server)
    assert [str(e) for e in OpenAPIV31SpecValidator(spec).iter_errors()] == []
    ops = [(path, m, op) for path, item in spec["paths"].items() for m, op in item.items()]
    ids = [op["operationId"] for _, _, op in ops]
    assert len(ids) == len(set(ids)) and all(ids)
    params = {
        (path, p["name"]): p["schema"]["type"]
        for path, _, op in ops
        for p in op.get("parameters", [])
        if p["in"] == "query"
    }
    for name in ("status", "name", "cursor", "since", "until"):
        assert params.get(("/v1/runs", name), "string") == "string"
    assert params[("/v1/runs", "status")] == "string"
    assert params[("/v1/runs", "limit")] == "integer"
    assert params[("/v1/results/{request_id}", "format")] == "string"
    assert params[("/v1/results/{request_id}", "page")] == "integer"
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearerAuth": []}]
    simple = spec["paths"]["/v1/query/simple"]["post"]["responses"]
    assert {"400", "401", "403", "413", "429"} <= set(simple)
    health = spec["paths"]["/v1/health"]["get"]
    assert health["security"] == [] and "401" not in health["responses"]


def test_a_generated_client_works(server: Server, tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_bytes(httpx.get(f"{server.url}/openapi.json").content)
    (tmp_path / "gen.yaml").write_text(
        "post_hooks: []\nproject_name_override: sluice-client\n"
        "package_name_override: sluice_client\n"
    )
    bin_dir = Path(sys.executable).parent
    r = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            "spec.json",
            "--output-path",
            "out",
            "--config",
            "gen.yaml",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Warning" not in r.stdout + r.stderr, r.stdout + r.stderr  # every schema understood
    probe = f"""
import sys
sys.path.insert(0, {str(tmp_path / "out")!r})
from sluice_client import Client
from sluice_client.api.default import health, query_simple
from sluice_client.models import QueryBlocked, QuerySuccess, SimpleQueryRequest

client = Client(base_url={server.url!r}, raise_on_unexpected_status=True)
assert health.sync(client=client).status == "ok"
ok = query_simple.sync(
    client=client,
    body=SimpleQueryRequest(database="lite", table="people", query="SELECT id FROM people"),
)
assert isinstance(ok, QuerySuccess), ok
print(sorted(row["id"] for row in ok.data.rows))
blocked = query_simple.sync(
    client=client,
    body=SimpleQueryRequest(database="pg", table="secrets", query="SELECT * FROM secrets"),
)
assert isinstance(blocked, QueryBlocked), blocked
print(blocked.error.stage)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[1,", "2,", "3]", "RBAC_GATE"]

"""Schemathesis against the served /openapi.json, with real databases, tables, queries,
results and runs as examples (issue 11): no 5xx, no undocumented status, no response that
breaks its documented schema. Bounded: a few examples per operation, a deadline per run."""

from __future__ import annotations

import time
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.isolation.conftest import TOKENS, Iso

EXAMPLES_PER_OPERATION = 8
BUDGET_S = 90.0  # the whole sweep; it takes ~20-40 s on an idle machine
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def real_examples(iso: Iso, auth: dict[str, str]) -> dict[str, Any]:
    """Ids that exist: a stored result and a finished run of bob's."""
    with httpx.Client(base_url=iso.url, headers=auth, timeout=30) as c:
        step = {
            "step_id": "s0",
            "database": "shop",
            "table": "items",
            "query": "SELECT id FROM items",
        }
        result = c.post("/v1/query", json={"steps": [step]}).json()["request_id"]
        runs = [c.post("/v1/runs", json={"config": {"steps": [step]}}).json()["run_id"]]
        runs.append(c.post("/v1/runs", json={"config": {"steps": [step]}}).json()["run_id"])
        deadline = time.monotonic() + 20
        for run in runs:
            while c.get(f"/v1/runs/{run}").json()["status"] not in ("completed", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.1)
    return {
        "db": "shop",
        "table": "items",
        "request_id": result,
        "run_id": runs[0],
        "run_id DELETE": runs[1],  # the one DELETE removes, so the others keep theirs
        "bodies": {
            "/v1/query/simple": {
                "database": "shop",
                "table": "items",
                "query": "SELECT id, name, price FROM items WHERE id < 20",
            },
            "/v1/query": {
                "steps": [
                    step,
                    {
                        "step_id": "s1",
                        "database": "shop",
                        "table": "people",
                        "query": "SELECT id, name FROM people",
                        "depends_on": ["s0"],
                        "link_from": "id",
                        "link_to": "id",
                    },
                ],
                "merge": "SELECT s1.name, count(*) AS n FROM s0 JOIN s1 ON s0.id = s1.id "
                "GROUP BY 1",
            },
            "/v1/runs": {
                "config": "steps:\n  - {step_id: s0, database: shop, table: items, "
                "query: SELECT id FROM items}\n"
            },
        },
    }


def with_examples(doc: dict[str, Any], ex: dict[str, Any]) -> dict[str, Any]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                name = param["name"]
                if param["in"] == "path" and name in ex:
                    param["example"] = ex.get(f"{name} {method.upper()}", ex[name])
            body = ex["bodies"].get(path)
            if body is not None and "requestBody" in op:
                op["requestBody"]["content"]["application/json"]["example"] = body
    return doc


def test_the_api_keeps_its_documented_contract(iso: Iso) -> None:
    auth = {"Authorization": f"Bearer {TOKENS['bob']}"}
    doc = httpx.get(f"{iso.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(with_examples(doc, real_examples(iso, auth)))
    started = time.monotonic()
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if time.monotonic() - started > BUDGET_S:
            break
        tested += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=iso.url, headers=auth, timeout=30)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # each operation's first failure, all reported together
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert tested >= 12, f"only {tested} operations tested within {BUDGET_S}s"
    assert not failures, "\n\n".join(failures)

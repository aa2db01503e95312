"""One complete audit line per query request, whatever its outcome, and no secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.api.conftest import Server


def audit_lines(server: Server, request_ids: set[str], timeout: float = 10) -> dict[str, dict]:
    path = Path(server.data_dir) / "audit.jsonl"
    deadline = time.monotonic() + timeout
    found: dict[str, dict] = {}
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry.get("request_id") in request_ids:
                    found[entry["request_id"]] = entry
        if set(found) == request_ids:
            return found
        time.sleep(0.1)
    raise AssertionError(f"audit lines missing for {request_ids - set(found)}")


def test_one_line_per_request_with_verdicts_and_outcome(server: Server) -> None:
    bodies = {
        "ok": {"database": "lite", "table": "people", "query": "SELECT id FROM people"},
        "blocked": {"database": "pg", "table": "secrets", "query": "SELECT * FROM secrets"},
        "failed": {"database": "pg", "table": "items", "query": "SELECT nope FROM items"},
    }
    ids: dict[str, str] = {}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for name, body in bodies.items():
            ids[name] = c.post("/v1/query/simple", json=body).json()["request_id"]
    lines = audit_lines(server, set(ids.values()))
    ok = lines[ids["ok"]]
    assert ok["transport"] == "rest/local" and ok["principal"] is None
    assert ok["client"] == "127.0.0.1"
    (step,) = ok["steps"]
    assert step["database"] == "lite" and step["table"] == "people" and step["language"] == "sql"
    assert step["query"] == "SELECT id FROM people"
    assert "LIMIT 101" in step["rewritten"]
    assert [v["stage"] for v in ok["verdicts"] if v["outcome"] != "block"][:5] == [
        "PROMPT_GUARD",
        "RBAC_GATE",
        "AST_CHECKER",
        "INJECTION_ANALYSER",
        "GUARDRAILS",
    ]
    assert ok["rows"] == 3 and ok["error"] is None if "error" in ok else ok["rows"] == 3
    assert ok["latency_ms"] > 0
    blocked = lines[ids["blocked"]]
    assert blocked["blocked"]["stage"] == "RBAC_GATE"
    assert "secrets" in blocked["blocked"]["reason"]
    failed = lines[ids["failed"]]
    assert "nope" in failed["error"]

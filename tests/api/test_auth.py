"""Bearer auth over real HTTP: 401s, per-principal permissions and rate limits, open probes,
and the loopback-only rule when no tokens are configured."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, free_port, make_files, start_server, stop_server
from tests.helpers import assert_blocked, assert_error_envelope

ANALYST_TOKEN = "analyst-" + "a" * 24
ADMIN_TOKEN = "admin-" + "b" * 24
WRITER_TOKEN = "writer-" + "c" * 24
OWNER_TOKEN = "owner-" + "d" * 24


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("auth")
    lite, _ = make_files(folder / "files")
    admin_sha = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    config = f"""\
databases:
  - name: lite
    type: sqlite
    path: {lite}
auth:
  tokens:
    - token: ${{ANALYST_TOKEN}}
      principal: analyst
      requests_per_minute: 5
    - token_sha256: {admin_sha}
      principal: admin
    - token: {WRITER_TOKEN}
      principal: writer
    - token: {OWNER_TOKEN}
      principal: owner
permissions:
  principals:
    analyst:
      lite:
        level: none
        tables:
          people: {{level: R, deny_columns: [age]}}
    admin:
      lite:
        level: R
    writer:
      lite:
        level: none
        tables:
          people: RW
    owner:
      lite:
        level: RWA
"""
    srv = start_server(config, folder, env={"ANALYST_TOKEN": ANALYST_TOKEN})
    try:
        yield srv
    finally:
        stop_server(srv)


def query(server: Server, token: str | None, sql: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{server.url}/v1/query/simple",
        headers=headers,
        timeout=30,
        json={"database": "lite", "table": "people", "query": sql},
    )


def test_missing_and_wrong_tokens_are_401(auth_server: Server) -> None:
    r = query(auth_server, None, "SELECT id FROM people")
    assert_error_envelope(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_error_envelope(query(auth_server, "nope", "SELECT id FROM people"), 401, "unauthorized")
    r = httpx.get(
        f"{auth_server.url}/v1/databases", headers={"Authorization": f"Basic {ADMIN_TOKEN}"}
    )
    assert_error_envelope(r, 401, "unauthorized")


def test_probes_stay_open(auth_server: Server) -> None:
    assert httpx.get(f"{auth_server.url}/v1/health").status_code == 200
    assert httpx.get(f"{auth_server.url}/openapi.json").status_code == 200


def test_each_principal_has_its_own_permissions(auth_server: Server) -> None:
    # admin (token given as sha256 in the config) reads every column
    r = query(auth_server, ADMIN_TOKEN, "SELECT id, age FROM people ORDER BY id")
    assert r.status_code == 200, r.text
    assert [row["age"] for row in r.json()["data"]["rows"]] == [36, 41, 85]
    # analyst may not read the denied column, in any shape
    for sql in (
        "SELECT id, age FROM people",
        "SELECT * FROM people",
        "SELECT id FROM people WHERE age > 40",
        "SELECT id FROM people ORDER BY age",
    ):
        body = assert_blocked(query(auth_server, ANALYST_TOKEN, sql), "RBAC_GATE")
        assert "age" in body["error"]["reason"]
    r = query(auth_server, ANALYST_TOKEN, "SELECT id, name FROM people ORDER BY id")
    assert r.status_code == 200
    assert r.json()["data"]["rows"][0] == {"id": 1, "name": "Ada"}


def test_rate_limit_per_principal(auth_server: Server) -> None:
    statuses = [
        query(auth_server, ANALYST_TOKEN, "SELECT id FROM people").status_code for _ in range(8)
    ]
    assert 429 in statuses, statuses
    r = query(auth_server, ANALYST_TOKEN, "SELECT id FROM people")
    body = assert_error_envelope(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    assert body["error"]["message"]
    # another principal is not limited by the analyst's traffic
    assert query(auth_server, ADMIN_TOKEN, "SELECT id FROM people").status_code == 200


def test_no_tokens_refuses_to_bind_off_loopback(tmp_path: Path) -> None:
    lite, _ = make_files(tmp_path / "files")
    cfg = tmp_path / "sluice.yaml"
    cfg.write_text(f"databases:\n  - name: lite\n    type: sqlite\n    path: {lite}\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluice.cli",
            "serve",
            "--config",
            str(cfg),
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "refusing to bind '0.0.0.0' without auth" in r.stderr
    assert "--insecure-no-auth" in r.stderr


def count_people(server: Server) -> int:
    r = query(server, ADMIN_TOKEN, "SELECT count(*) AS n FROM people")
    assert r.status_code == 200, r.text
    return int(r.json()["data"]["rows"][0]["n"])


def test_writes_follow_the_grant_and_report_rows_affected(auth_server: Server) -> None:
    before = count_people(auth_server)
    insert = "INSERT INTO people (id, name, age, city) VALUES (100, 'Edsger', 72, 'Austin')"
    assert_blocked(query(auth_server, ADMIN_TOKEN, insert), "RBAC_GATE")  # R only
    # dry run: the verdicts and the statement, nothing executed
    r = httpx.post(
        f"{auth_server.url}/v1/query/simple",
        timeout=30,
        headers={"Authorization": f"Bearer {WRITER_TOKEN}"},
        json={"database": "lite", "table": "people", "query": insert, "dry_run": True},
    )
    assert r.status_code == 200, r.text
    (step,) = r.json()["steps"]
    assert step["operation"] == "INSERT" and "INSERT INTO people" in step["rewritten"]
    assert count_people(auth_server) == before
    r = query(auth_server, WRITER_TOKEN, insert)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["rows_affected"] == 1
    assert count_people(auth_server) == before + 1
    r = query(auth_server, WRITER_TOKEN, "UPDATE people SET city = 'Zurich' WHERE id = 100")
    assert r.json()["data"]["rows_affected"] == 1
    # a DELETE without WHERE needs the A level; a bounded one does not
    body = assert_blocked(query(auth_server, WRITER_TOKEN, "DELETE FROM people"), "RBAC_GATE")
    assert "(A) for DELETE without a WHERE clause" in body["error"]["reason"]
    assert "people: RWA" in body["error"]["suggestion"]
    assert count_people(auth_server) == before + 1
    r = query(auth_server, WRITER_TOKEN, "DELETE FROM people WHERE id = 100")
    assert r.json()["data"]["rows_affected"] == 1
    # a failing write commits nothing: a duplicate key in a two-row insert
    r = query(
        auth_server,
        WRITER_TOKEN,
        "INSERT INTO people (id, name) VALUES (101, 'x'), (1, 'duplicate')",
    )
    # a constraint the statement violates is the client's mistake: 400, SQLite's words
    assert (
        "UNIQUE constraint failed"
        in assert_error_envelope(r, 400, "query_rejected")["error"]["message"]
    )
    assert count_people(auth_server) == before
    r = query(auth_server, OWNER_TOKEN, "DELETE FROM people WHERE id > 1000")
    assert r.status_code == 200 and r.json()["data"]["rows_affected"] == 0

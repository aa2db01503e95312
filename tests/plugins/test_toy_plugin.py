"""The plugin interfaces, used the way a third-party package would: a connector type and a
language defined only in tests/plugins/toy.py, registered through the registry API the entry
points feed, then configured in sluice.yaml, checked by every safety stage and joined with
PostgreSQL by the federated engine. (The connector conformance suite runs it too:
tests/connectors/conftest.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from api.envelopes import DryRunResponse, QuerySuccess
from api.local import open_service
from api.service import QueryInvalid, SafetyBlocked
from connectors import registry
from connectors.errors import SluiceError
from engine.config import Config, load_config_text
from engine.ir import FederatedQuery
from tests.plugins import toy
from tests.servers import PgServer

pytestmark = [pytest.mark.postgres, pytest.mark.sqlite]


@pytest.fixture
def plugin() -> Iterator[None]:
    with toy.installed():
        yield


@pytest.fixture
def toy_file(tmp_path: Path) -> Path:
    path = tmp_path / "gadgets.toy"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE gadgets (id INTEGER PRIMARY KEY, kind_id INTEGER, name TEXT, "
                "secret TEXT)")  # fmt: skip
    con.executemany(
        "INSERT INTO gadgets VALUES (?, ?, ?, ?)",
        [(i, 1 + i % 3, f"gadget {i}", f"s{i}") for i in range(1, 31)],
    )
    con.commit()
    con.close()
    return path


@pytest.fixture
def config(plugin: None, toy_file: Path, pg_server: PgServer, tmp_path: Path) -> Config:
    pg_server.run(
        "DROP TABLE IF EXISTS toy_kinds",
        "CREATE TABLE toy_kinds (id integer PRIMARY KEY, label text)",
        "INSERT INTO toy_kinds VALUES (1, 'spring'), (2, 'gear'), (4, 'unused')",
    )
    return load_config_text(f"""
databases:
  - {{name: pg, type: postgresql, dsn: "{pg_server.dsn}"}}
  - {{name: shelf, type: {toy.TYPE}, path: "{toy_file}"}}
safety:
  max_rows_per_query: 100
server:
  data_dir: "{tmp_path / "data"}"
permissions:
  default:
    pg: {{level: R}}
    shelf:
      level: R
      tables:
        gadgets: {{level: R, deny_columns: [secret]}}
""")


def query(body: dict[str, Any]) -> FederatedQuery:
    return msgspec.convert(body, FederatedQuery)


JOIN = {
    "steps": [
        {"step_id": "k", "database": "pg", "table": "toy_kinds",
         "query": "SELECT id, label FROM toy_kinds"},
        {"step_id": "g", "database": "shelf", "table": "gadgets",
         "query": "get id, kind_id, name from gadgets", "language": toy.LANGUAGE,
         "depends_on": ["k"], "link_from": "id", "link_to": "kind_id"},
    ],
    "merge": "SELECT g.id, g.name, k.label FROM g JOIN k ON g.kind_id = k.id ORDER BY g.id",
}  # fmt: skip


def test_config_decodes_the_plugins_settings(config: Config) -> None:
    shelf = config.database("shelf")
    assert isinstance(shelf, toy.ToySettings) and shelf.type == toy.TYPE
    assert toy.TYPE in registry.names()


def test_an_unregistered_type_is_a_config_error(toy_file: Path) -> None:
    with pytest.raises(SluiceError) as info:
        load_config_text(f"databases:\n  - {{name: s, type: {toy.TYPE}, path: '{toy_file}'}}\n")
    assert f"Invalid enum value '{toy.TYPE}'" in str(info.value.args) + str(info.value)


async def test_federated_join_with_postgresql(config: Config) -> None:
    async with open_service(config) as session:
        result = await session.federated(query(JOIN))
    assert isinstance(result, QuerySuccess)
    expected = [
        {"id": i, "name": f"gadget {i}", "label": {1: "spring", 2: "gear"}[1 + i % 3]}
        for i in range(1, 31)
        if 1 + i % 3 in (1, 2)
    ]
    assert result.data.rows == expected
    assert result.safety.stages_passed == [
        "PROMPT_GUARD", "RBAC_GATE", "AST_CHECKER", "INJECTION_ANALYSER", "GUARDRAILS"
    ]  # fmt: skip
    (meta,) = [m for m in result.metadata.steps if m.step_id == "g"]
    assert meta.strategy == "link" and meta.rows_returned == len(expected)


async def test_the_language_rewrites_and_the_stages_ask_it(config: Config) -> None:
    async with open_service(config) as session:
        dry = await session.simple("shelf", "gadgets", "get id, name from gadgets", dry_run=True)
        assert isinstance(dry, DryRunResponse)
        (step,) = dry.steps
        assert step.language == toy.LANGUAGE
        assert step.rewritten == 'SELECT "id", "name" FROM "gadgets" LIMIT 101'
        rows = await session.rows("shelf", "gadgets", "get id, name from gadgets")
        assert rows[:2] == [{"id": 1, "name": "gadget 1"}, {"id": 2, "name": "gadget 2"}]
        with pytest.raises(SafetyBlocked) as denied:
            await session.simple("shelf", "gadgets", "get id, secret from gadgets")
        assert denied.value.block.stage == "RBAC_GATE" and "secret" in denied.value.block.reason
        with pytest.raises(SafetyBlocked) as star:
            await session.simple("shelf", "gadgets", "get * from gadgets")
        assert star.value.block.stage == "RBAC_GATE"
        with pytest.raises(SafetyBlocked) as other:
            await session.simple("shelf", "gadgets", "get id from toy_kinds")
        assert other.value.block.stage == "AST_CHECKER"  # what is checked is what runs
        assert other.value.block.reason == "toyql reads toy_kinds, not gadgets"
        with pytest.raises(SafetyBlocked) as bad:
            await session.simple("shelf", "gadgets", "SELECT id FROM gadgets")
        assert bad.value.block.stage == "AST_CHECKER"
        assert bad.value.block.reason == "not a toyql body"
        with pytest.raises(QueryInvalid) as wrong:  # the client's mistake: 400, not a refusal
            await session.simple("shelf", "gadgets", "get id from gadgets", language="sql")
        assert wrong.value.status == 400 and wrong.value.code == "invalid_request"
        assert wrong.value.block.stage == "PROMPT_GUARD" and "speaks toyql" in str(wrong.value)

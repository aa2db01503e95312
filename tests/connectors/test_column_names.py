"""GUARDRAILS' rewrite keeps the result's column names as the client wrote them, on every
SQL database: several name an unaliased column after its text (`count(*)` on SQLite and
MariaDB, `CAST(x AS text)` on DuckDB), so a regenerated `COUNT(*)` would rename it."""

from __future__ import annotations

import pytest

from connectors.base import Connector, Statement
from safety.languages import registry as languages
from tests.connectors.conftest import KINDS
from tests.plugins import toy

QUERIES = [
    "SELECT count(*), max(id), id + 1, lower(name), Sum( id ) FROM items GROUP BY id, name",
    "select Count( * ) from items",
    "SELECT DISTINCT id*2, coalesce(name, 'none') FROM items WHERE id < 5",
    "WITH x AS (SELECT id FROM items) SELECT min(id), (SELECT max(id) FROM items) FROM x",
    "SELECT count(*) FROM items UNION ALL SELECT max(id) FROM items",
    "SELECT id, name AS n, cast(id as char(3)) FROM items",
]
SQL_KINDS = [k for k in KINDS if k.id != toy.TYPE]  # toyql is not SQL


async def names(connector: Connector, text: str) -> list[str]:
    batches = [b async for b in connector.stream(Statement(text, max_rows=5))]
    return [c.name for c in batches[0].columns]


@pytest.mark.parametrize("backend", SQL_KINDS, indirect=True)
@pytest.mark.parametrize("query", QUERIES)
async def test_rewritten_query_has_the_original_column_names(
    connector: Connector, query: str
) -> None:
    language = languages.get(connector.language)
    analysis = language.analyse(query, connector.dialect)
    assert analysis.error is None, analysis.error
    rewrite = language.rewrite(analysis, query, connector.dialect, 100, 30.0)
    assert rewrite.text != query  # the cap was added
    assert await names(connector, rewrite.text) == await names(connector, query)

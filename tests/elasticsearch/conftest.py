"""Elasticsearch connector tests: the session server of tests/conftest.py (`es_url`), a raw
httpx client that seeds indices and computes the expected answers, and an opened connector.

Every index a test module creates carries a random prefix and is deleted afterwards.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from connectors.base import Batch, Statement
from connectors.config import DatabaseConfig
from connectors.es import ElasticsearchConnector
from connectors.registry import database_config

pytestmark = pytest.mark.elasticsearch


class Raw:
    """The raw client: what Elasticsearch itself answers, for seeding and expectations."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)
        self.prefix = f"t{secrets.token_hex(3)}-"

    def name(self, base: str) -> str:
        return self.prefix + base

    def req(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        r = self.http.request(
            method,
            path,
            content=None if body is None else json.dumps(body),
            params=params,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def create(self, index: str, properties: dict[str, Any], docs: list[dict[str, Any]]) -> None:
        self.req("PUT", f"/{index}", {"mappings": {"properties": properties}})
        self.bulk(index, docs)

    def bulk(self, index: str, docs: list[dict[str, Any]], chunk: int = 5_000) -> None:
        for at in range(0, len(docs), chunk):
            lines = []
            for d in docs[at : at + chunk]:
                d = dict(d)
                lines.append(json.dumps({"index": {"_index": index, "_id": str(d.pop("_id"))}}))
                lines.append(json.dumps(d))
            r = self.http.post(
                "/_bulk",
                content="\n".join(lines) + "\n",
                headers={"Content-Type": "application/x-ndjson"},
                params={"refresh": "true"},
            )
            assert r.status_code == 200 and not r.json()["errors"], r.text[:1000]

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.req("POST", f"/{index}/_search", body)

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="session")
def raw(es_url: str) -> Iterator[Raw]:
    client = Raw(es_url)
    try:
        yield client
    finally:
        client.http.delete(f"/{client.prefix}*")
        client.close()


def es_config(url: str, **kw: Any) -> DatabaseConfig:
    return database_config(name="es", type="elasticsearch", dsn=url, pool_size=4, **kw)


@pytest.fixture
async def conn(es_url: str) -> AsyncIterator[ElasticsearchConnector]:
    c = ElasticsearchConnector(es_config(es_url))
    await c.open()
    try:
        yield c
    finally:
        await c.close()


def stmt(body: dict[str, Any] | str, index: str, **kw: Any) -> Statement:
    text = body if isinstance(body, str) else json.dumps(body)
    return Statement(text, options={"collection": index}, **kw)


async def collect(conn: ElasticsearchConnector, statement: Statement) -> list[Batch]:
    return [b async for b in conn.stream(statement)]


def records(batches: list[Batch]) -> list[dict[str, Any]]:
    out = []
    for b in batches:
        names = [c.name for c in b.columns]
        rows = b.rows if b.rows is not None else [tuple(r.values()) for r in b.arrow.to_pylist()]
        out.extend(dict(zip(names, r, strict=True)) for r in rows)
    return out

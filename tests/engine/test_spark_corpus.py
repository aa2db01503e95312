"""The merge corpus (spark_corpus.yaml) on both engines: each `same` case gives the same
answer in DuckDB and on a real Spark Connect server (through SparkMerger: staged Parquet,
transpiled SQL, the result streamed into the store); each `refused` case is refused by the
portability check naming its construct, so nothing in the corpus is ever silently different.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from engine.errors import MergeNotPortable
from engine.merge import check_merge, parse_merge, qualify
from engine.results import DiskResultStore, Reader
from engine.sink import RequestTables, Sink, TableState
from engine.spark import SparkMerger
from engine.spark_settings import SparkSettings
from engine.spark_sql import findings

# the first test pays for starting the Spark Connect server (tests/spark_server.py)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CORPUS = YAML(typ="safe").load((Path(__file__).parent / "spark_corpus.yaml").read_text())
CASES = CORPUS["cases"]
STEPS = list(CORPUS["tables"])


def test_the_corpus_is_large_and_covers_both_kinds() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 40
    kinds = {c["expect"] for c in CASES}
    assert kinds == {"same", "refused"}
    assert sum(c["expect"] == "refused" for c in CASES) >= 15


@pytest.fixture(scope="module")
def tables() -> Iterator[RequestTables]:
    """The corpus's step tables in a request schema of a locked-down sink, as steps leave
    them (TableState filled from DuckDB's own description)."""
    sink = Sink()
    cur = sink.cursor()
    schema = "req_sparkcorpus"
    cur.execute(f'CREATE SCHEMA "{schema}"')
    req = RequestTables(request_id="req_corpus", schema=schema, cursor=cur)
    for name, sql in CORPUS["tables"].items():
        req.run(f"CREATE TABLE {req.table_name(name)} AS {sql}")
        state = TableState()
        for col, typ, *_ in req.run(f"DESCRIBE {req.table_name(name)}"):
            state.columns[col.lower()] = typ
            state.names[col.lower()] = col
        req.tables[name] = state
    yield req
    cur.close()
    sink.close()


@pytest.fixture(scope="module")
def merger(spark: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkMerger]:
    staging = tmp_path_factory.mktemp("staging")
    m = SparkMerger(SparkSettings(remote=spark, staging=staging.as_uri()))
    yield m
    m.close()
    assert list(staging.iterdir()) == []  # every request's staging folder was removed


def _norm(value: Any) -> Any:
    """A value compared by what it means, not by how each engine types it."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, decimal.Decimal | int | float):
        f = float(value)
        return round(f, 6) if math.isfinite(f) else f
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, list | tuple):
        return tuple(_norm(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _norm(v)) for k, v in value.items()))
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, decimal.Decimal | int | float):
        return "number"
    if isinstance(value, dt.datetime | dt.date):
        return type(value).__name__
    return type(value).__name__


def _rows(table: Any) -> list[tuple[Any, ...]]:
    return [tuple(_norm(v) for v in row.values()) for row in table.to_pylist()]


def _sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, repr(v)) for v in row)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_case(
    case: dict[str, Any], tables: RequestTables, merger: SparkMerger, tmp_path: Path
) -> None:
    tree = parse_merge(case["sql"])
    check_merge(tree, STEPS)
    if case["expect"] == "refused":
        types = {n: {s.names[k]: t for k, t in s.columns.items()} for n, s in tables.tables.items()}
        found = findings(tree, types)
        assert found, f"{case['name']}: not refused"
        assert case["construct"].lower() in found[0].construct.lower(), found[0]
        store = DiskResultStore(tmp_path / "results")
        with pytest.raises(MergeNotPortable) as caught:
            await merger.merge_and_store(
                tables, tree, STEPS, store, case["name"], inline_rows=10, owner=None
            )
        assert caught.value.status == 400 and caught.value.suggestion
        assert len(store) == 0  # nothing was stored
        return

    expected = tables.cursor.sql(qualify(tree, tables.schema, STEPS)).to_arrow_table()
    store = DiskResultStore(tmp_path / "results")
    stored = await merger.merge_and_store(
        tables, tree, STEPS, store, case["name"], inline_rows=5, owner="alice"
    )
    page = store.page_sync(case["name"], 1, 10_000, Reader("alice"))
    assert stored.columns == expected.column_names
    assert page.total == expected.num_rows
    got = [tuple(_norm(v) for v in row.values()) for row in page.rows]
    want = _rows(expected)
    if case.get("ordered"):
        assert got == want
    else:
        assert sorted(got, key=_sort_key) == sorted(want, key=_sort_key)
    for i, column in enumerate(expected.column_names):
        kinds = {_kind(r[i]) for r in got if r[i] is not None}
        want_kinds = {_kind(r[i]) for r in want if r[i] is not None}
        assert kinds == want_kinds, f"column {column}: {kinds} != {want_kinds}"

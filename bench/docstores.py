"""`docstores`: a linked join of N PostgreSQL parent rows into CouchDB and into DynamoDB,
through sluice and through the raw clients fetching the same items with the same batching.

    python -m bench.docstores [--n 100000] [--batch 1000]

Servers: PostgreSQL (running), PouchDB Server (npm, `make test-servers`) and moto's DynamoDB
server (`moto_server`), both started here as their own processes on free ports, so neither
shares this process's interpreter with the code measured. Data: `parents(id, key)` in a
throwaway PostgreSQL database; N child documents/items whose id is `key`.

sluice: one federated request in-process (api.local, the same QueryService path as HTTP):
parent step `SELECT id, key FROM parents`, child step linked `key -> _id` (CouchDB `find`
with an empty selector and `fields`) or `key -> id` (DynamoDB `Scan` with a
ProjectionExpression), merge `count(*)`/`sum(amount)` over the join in DuckDB.

raw: asyncpg fetches the parents; the children come in batches of `--batch` keys with the
engine's `link_batches_in_flight` batches at once: CouchDB `POST _all_docs {keys}` with
`include_docs` (httpx, one pooled client), DynamoDB BatchGetItem calls of 100 keys, 4 in flight
per batch (aiobotocore); the items are decoded (JSON / TypeDeserializer) and joined to the
parents in a Python dict. `vs_raw` = sluice seconds / raw seconds, each the best of `--repeat`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
POUCHDB_SERVER = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "pouchdb-server"
PG_ADMIN_DSN = os.environ.get("SLUICE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REGION = "us-east-1"
CREDS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
IN_FLIGHT = 3  # safety.link_batches_in_flight (the engine's default)
OUT = ROOT / "bench" / "results" / "docstores.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {seconds:g}s")


@contextlib.contextmanager
def process(cmd: list[str], url: str, what: str, cwd: Path) -> Iterator[str]:
    log = (cwd / f"{what}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(url, proc, what)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


async def connect(dsn: str) -> asyncpg.Connection:
    """A PostgreSQL connection, waiting out a server that is briefly full (shared machine)."""
    for _ in range(60):
        try:
            return await asyncpg.connect(dsn)
        except asyncpg.TooManyConnectionsError:
            await asyncio.sleep(1)
    return await asyncpg.connect(dsn)


def key(i: int) -> str:
    return f"c{i:07d}"


# -- loading --------------------------------------------------------------------------------


async def load_pg(dsn: str, n: int) -> None:
    conn = await connect(dsn)
    try:
        await conn.execute("CREATE TABLE parents (id bigint PRIMARY KEY, key text NOT NULL)")
        await conn.copy_records_to_table(
            "parents", records=[(i, key(i)) for i in range(n)], columns=["id", "key"]
        )
        await conn.execute("ANALYZE parents")
    finally:
        await conn.close()


async def load_couch(url: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        (await c.put("/children")).raise_for_status()
        for at in range(0, n, 2_000):
            docs = [
                {"_id": key(i), "parent": i, "amount": i % 100, "name": f"child {i}"}
                for i in range(at, min(n, at + 2_000))
            ]
            resp = await c.post("/children/_bulk_docs", json={"docs": docs})
            if resp.status_code != 201:
                raise RuntimeError(f"_bulk_docs answered {resp.status_code}: {resp.text[:300]}")


async def load_dynamo(endpoint: str, n: int) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=endpoint,
        config=AioConfig(retries={"max_attempts": 1}, max_pool_connections=16),
        **CREDS,
    ) as c:
        await c.create_table(
            TableName="children",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        sem = asyncio.Semaphore(8)

        async def put(at: int) -> None:
            items = [
                {
                    "PutRequest": {
                        "Item": {
                            "id": {"S": key(i)},
                            "parent": {"N": str(i)},
                            "amount": {"N": str(i % 100)},
                            "name": {"S": f"child {i}"},
                        }
                    }
                }
                for i in range(at, min(n, at + 25))
            ]
            async with sem:
                answer = await c.batch_write_item(RequestItems={"children": items})
            assert not answer.get("UnprocessedItems")

        await asyncio.gather(*(put(at) for at in range(0, n, 25)))


# -- raw clients ----------------------------------------------------------------------------


async def parents(dsn: str) -> dict[str, int]:
    conn = await connect(dsn)
    try:
        return {r["key"]: r["id"] for r in await conn.fetch("SELECT id, key FROM parents")}
    finally:
        await conn.close()


def batches(keys: list[str], size: int) -> list[list[str]]:
    return [keys[at : at + size] for at in range(0, len(keys), size)]


async def raw_couch(dsn: str, url: str, batch: int) -> tuple[int, int]:
    by_key = await parents(dsn)
    total, amount = 0, 0
    sem = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, timeout=300) as c:

        async def one(keys: list[str]) -> list[dict[str, Any]]:
            async with sem:
                resp = await c.post(
                    "/children/_all_docs",
                    params={"include_docs": "true"},
                    content=msgspec.json.encode({"keys": keys}),
                    headers={"Content-Type": "application/json"},
                )
            rows = msgspec.json.decode(resp.content)["rows"]
            return [r["doc"] for r in rows if r.get("doc")]

        for docs in await asyncio.gather(*(one(b) for b in batches(sorted(by_key), batch))):
            for d in docs:
                if d["_id"] in by_key:
                    total += 1
                    amount += d["amount"]
    return total, amount


async def raw_dynamo(dsn: str, endpoint: str, batch: int) -> tuple[int, int]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from boto3.dynamodb.types import TypeDeserializer

    by_key = await parents(dsn)
    deserialise = TypeDeserializer().deserialize
    total, amount = 0, 0
    outer = asyncio.Semaphore(IN_FLIGHT)
    async with get_session().create_client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=endpoint,
        config=AioConfig(retries={"max_attempts": 2, "mode": "standard"}),
        **CREDS,
    ) as c:

        async def get(keys: list[str], inner: asyncio.Semaphore) -> list[dict[str, Any]]:
            request = {
                "children": {
                    "Keys": [{"id": {"S": k}} for k in keys],
                    "ProjectionExpression": "id, amount",
                }
            }
            out: list[dict[str, Any]] = []
            async with inner:
                while request:
                    answer = await c.batch_get_item(RequestItems=request)
                    out += answer["Responses"].get("children", [])
                    request = answer.get("UnprocessedKeys") or {}
            return [{k: deserialise(v) for k, v in item.items()} for item in out]

        async def one(keys: list[str]) -> list[dict[str, Any]]:
            async with outer:
                inner = asyncio.Semaphore(4)
                parts = await asyncio.gather(*(get(b, inner) for b in batches(keys, 100)))
            return [item for part in parts for item in part]

        for items in await asyncio.gather(*(one(b) for b in batches(sorted(by_key), batch))):
            for item in items:
                if item["id"] in by_key:
                    total += 1
                    amount += int(item["amount"])
    return total, amount


# -- sluice ---------------------------------------------------------------------------------


def config_text(dsn: str, couch: str, dynamo: str, n: int, batch: int) -> str:
    return f"""\
databases:
  - name: pg
    type: postgresql
    dsn: {dsn}
  - name: couch
    type: couchdb
    dsn: {couch}
  - name: dyn
    type: dynamodb
    endpoint_url: {dynamo}
    region: {REGION}
    aws_access_key_id: {CREDS["aws_access_key_id"]}
    aws_secret_access_key: {CREDS["aws_secret_access_key"]}
permissions:
  default:
    pg: {{level: R}}
    couch: {{level: R}}
    dyn: {{level: R}}
safety:
  max_rows_per_query: {n + 10}
  max_link_values_per_batch: {batch}
  link_batches_in_flight: {IN_FLIGHT}
  query_timeout_seconds: 600
"""


def join_query(store: str) -> Any:
    from engine.ir import FederatedQuery, StepSpec

    if store == "couch":
        child = StepSpec(
            step_id="c",
            database="couch",
            table="children",
            query='{"operation": "find", "selector": {}, "fields": ["_id", "amount"]}',
            depends_on=["p"],
            link_from="key",
            link_to="_id",
        )
        on = 'c."_id" = p.key'
    else:
        child = StepSpec(
            step_id="c",
            database="dyn",
            table="children",
            query='{"verb": "Scan", "ProjectionExpression": "id, amount"}',
            depends_on=["p"],
            link_from="key",
            link_to="id",
        )
        on = "c.id = p.key"
    parent = StepSpec(
        step_id="p", database="pg", table="parents", query="SELECT id, key FROM parents"
    )
    return FederatedQuery(
        steps=[parent, child],
        merge=f"SELECT count(*) AS n, sum(c.amount) AS total FROM p JOIN c ON {on}",
    )


async def sluice_join(text: str, store: str, repeat: int) -> tuple[float, tuple[int, int]]:
    from api.local import open_service
    from engine.config import load_config_text

    config = load_config_text(text)
    best = float("inf")
    got: tuple[int, int] = (0, 0)
    async with open_service(config, startup_wait=60) as s:
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = await s.federated(join_query(store))
            best = min(best, time.perf_counter() - t0)
            row = result.data.rows[0]
            got = (int(row["n"]), int(row["total"]))
    return best, got


async def timed(fn: Any, repeat: int, *args: Any) -> tuple[float, Any]:
    best, got = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = await fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, got


def run(n: int, batch: int, repeat: int) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="bench-docstores-"))
    db = f"sluice_bench_docstores_{secrets.token_hex(4)}"
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    dsn = f"{base}/{db}"
    couch_port, moto_port = free_port(), free_port()
    couch_url, moto_url = f"http://127.0.0.1:{couch_port}", f"http://127.0.0.1:{moto_port}"
    moto_exe = str(Path(sys.executable).with_name("moto_server"))
    rows: list[dict[str, Any]] = []

    async def admin(sql: str) -> None:
        conn = await connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    try:
        with (
            process(
                [str(POUCHDB_SERVER), "-p", str(couch_port), "-o", "127.0.0.1", "-m", "-n"],
                couch_url,
                "pouchdb-server",
                work,
            ),
            process(
                [moto_exe, "-H", "127.0.0.1", "-p", str(moto_port)],
                f"{moto_url}/moto-api/",
                "moto_server",
                work,
            ),
        ):
            t0 = time.perf_counter()
            asyncio.run(load_pg(dsn, n))
            asyncio.run(load_couch(couch_url, n))
            asyncio.run(load_dynamo(moto_url, n))
            print(f"loaded {n} rows into each store in {time.perf_counter() - t0:.1f}s")
            text = config_text(dsn, couch_url, moto_url, n, batch)
            for store in ("couch", "dyn"):
                raw_fn = raw_couch if store == "couch" else raw_dynamo
                url = couch_url if store == "couch" else moto_url
                raw_s, raw_got = asyncio.run(timed(raw_fn, repeat, dsn, url, batch))
                sluice_s, sluice_got = asyncio.run(sluice_join(text, store, repeat))
                if raw_got != sluice_got or raw_got[0] != n:
                    raise RuntimeError(f"{store}: sluice {sluice_got} != raw {raw_got} (n={n})")
                row = {
                    "store": "CouchDB (PouchDB Server 4.2)"
                    if store == "couch"
                    else "DynamoDB (moto 5.2)",
                    "n": n,
                    "batch": batch,
                    "raw_s": raw_s,
                    "sluice_s": sluice_s,
                    "vs_raw": sluice_s / raw_s,
                    "load_avg_1m": os.getloadavg()[0],
                }
                print(row)
                rows.append(row)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    return rows


def write(rows: list[dict[str, Any]], repeat: int) -> None:
    lines = [
        "# Linked joins into the document stores",
        "",
        "`python -m bench.docstores` (see its docstring): N PostgreSQL parent rows linked into",
        "N CouchDB documents / DynamoDB items by id; sluice (one federated request, merge",
        "in DuckDB) against the raw clients fetching the same items with the same batching.",
        f"Best of {repeat} runs each; lower `vs_raw` is better (target <= 1.5).",
        "",
        "| store | parents | link batch | raw s | sluice s | vs_raw | load avg 1m |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['store']} | {r['n']:,} | {r['batch']:,} | {r['raw_s']:.2f} | {r['sluice_s']:.2f} "
        f"| {r['vs_raw']:.2f} | {r['load_avg_1m']:.2f} |"
        for r in rows
    ]
    OUT.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    rows = run(args.n, args.batch, args.repeat)
    if not args.no_write:
        write(rows, args.repeat)


if __name__ == "__main__":
    main()

"""DynamoDB through aiobotocore (one long-lived async client per configured database).

Settings: `region` (else AWS_REGION / AWS_DEFAULT_REGION), `endpoint_url` (DynamoDB Local,
moto, a VPC endpoint), credentials from `aws_access_key_id` / `aws_secret_access_key` /
`aws_session_token` or, when absent, botocore's usual chain (environment, profile, instance
role); `max_attempts` bounds the client's retries (default 2: a throttled call is retried
once, and a server error never costs the ~30 s of the SDK's default retry storm);
`pool_size` bounds the HTTP connections; `connect_timeout_seconds` and the statement timeout
bound every call.

Each step's `table` is one DynamoDB table (`Statement.options["collection"]`); the body is
described in `connectors.dynamodb_query`. Results:

- Query / Scan / ExecuteStatement SELECT / GetItem / BatchGetItem / TransactGetItems: one
  row per item, attributes as columns (typed as `connectors.dynamodb_items` and
  `connectors.mongo_flatten` describe); a BatchGetItem naming several tables adds `_table`;
  `Select: COUNT` gives one row `count`;
- DescribeTable / DescribeTimeToLive / DescribeContinuousBackups: one row of the description;
- writes and admin verbs: one row `rows_affected` (items written; 1 for an admin verb).

Paging: Query and Scan with `Limit` and `ExclusiveStartKey`, ExecuteStatement with
`NextToken`, until `Statement.max_rows` (cap + 1) or the body's own `Limit`, read as the total
wanted; a page is at most `batch_size` items. BatchGetItem/BatchWriteItem resubmit unprocessed
keys/items a bounded number of rounds, then fail naming what was left.

Time: every call runs under the statement's deadline (the stream shares one); cancelling the
call closes its connection. DynamoDB has no server-side statement to stop.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Annotated, Any, ClassVar

import anyio
import msgspec

from connectors.base import (
    Batch,
    Column,
    FieldInfo,
    LinkFilter,
    PoolStats,
    Statement,
    TableInfo,
)
from connectors.config import DatabaseConfig
from connectors.dynamodb_items import to_document
from connectors.dynamodb_query import (
    LINK_OPTION,
    MAX_BATCH_GET_KEYS,
    MAX_IN_OPERANDS,
    DynamoRequest,
    apply_link,
    chunks,
    link_filter,
    parse,
)
from connectors.errors import ConnectorUnavailable, QueryFailed, QueryTimedOut
from connectors.mongo_discovery import infer_fields
from connectors.mongo_flatten import RowShaper

DEFAULT_TIMEOUT_S = 30.0
MAX_TABLES = 500
SAMPLE_SIZE = 200
DISCOVERY_CONCURRENCY = 8
UNPROCESSED_ROUNDS = 5  # resubmissions of unprocessed keys/items before giving up
BATCH_GET_IN_FLIGHT = 4  # BatchGetItem calls of one linked statement running at once
_KEY_TYPES = {"S": "VARCHAR", "N": "DECIMAL(38,10)", "B": "BLOB"}
_ROWS_AFFECTED = [Column("rows_affected", "BIGINT")]


class DynamoDBSettings(DatabaseConfig, tag="dynamodb", frozen=True):
    """A DynamoDB endpoint: AWS, DynamoDB Local or moto."""

    region: str | None = None
    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 2

    @property
    def display_database(self) -> str:
        return self.endpoint_url or f"dynamodb:{self.region or 'default region'}"

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.aws_secret_access_key, self.aws_session_token) if s)

    def problem(self) -> str | None:
        if bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            return "give both `aws_access_key_id` and `aws_secret_access_key`, or neither"
        return None


class DynamoDBConnector:
    """DynamoDB through aiobotocore's async client."""

    settings: ClassVar[tuple[type[DatabaseConfig], ...]] = (DynamoDBSettings,)
    language: ClassVar[str] = "dynamo"
    dialect: ClassVar[str] = "dynamo"

    def __init__(self, config: DynamoDBSettings) -> None:
        self.config = config
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._default_timeout = config.query_timeout_seconds or DEFAULT_TIMEOUT_S
        # table -> (partition key name, its attribute type S/N/B), from DescribeTable
        self._keys: dict[str, tuple[str, str]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def client_options(self) -> dict[str, Any]:
        from aiobotocore.config import AioConfig

        c = self.config
        region = c.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConnectorUnavailable(
                c.name, "no AWS region: set `region`, or AWS_REGION in the environment"
            )
        opts: dict[str, Any] = {
            "region_name": region,
            "config": AioConfig(
                retries={"max_attempts": c.max_attempts, "mode": "standard"},
                connect_timeout=c.connect_timeout_seconds,
                read_timeout=self._default_timeout,
                max_pool_connections=c.pool_size,
                user_agent_extra="sluice",
            ),
        }
        if c.endpoint_url:
            opts["endpoint_url"] = c.endpoint_url
        if c.aws_access_key_id:
            opts["aws_access_key_id"] = c.aws_access_key_id
            opts["aws_secret_access_key"] = c.aws_secret_access_key or ""
            if c.aws_session_token:
                opts["aws_session_token"] = c.aws_session_token
        return opts

    async def open(self) -> None:
        if self._client is not None:
            return
        opts = self.client_options()
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                _session().create_client("dynamodb", **opts)
            )
        except Exception as exc:  # botocore raises many unrelated types for bad settings
            await stack.aclose()
            raise ConnectorUnavailable(
                self.config.name, f"invalid DynamoDB settings: {exc}"
            ) from exc
        self._stack = stack
        try:
            await self.ping()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await stack.aclose()

    def _dynamo(self) -> Any:
        if self._client is None:
            raise ConnectorUnavailable(self.config.name, "connector is not open")
        return self._client

    async def ping(self) -> None:
        statement = Statement("ping", timeout=self.config.connect_timeout_seconds + 1)
        deadline = anyio.current_time() + statement.timeout
        try:
            await self._call("list_tables", statement, deadline, Limit=1)
        except QueryTimedOut as exc:
            raise ConnectorUnavailable(self.config.name, "ping timed out") from exc
        except QueryFailed as exc:
            raise ConnectorUnavailable(self.config.name, exc.detail) from exc

    # -- one call --------------------------------------------------------------------------

    async def _call(self, method: str, statement: Statement, deadline: float, **params: Any) -> Any:
        with self._errors(statement, deadline):
            return await getattr(self._dynamo(), method)(**params)

    @contextlib.contextmanager
    def _errors(self, statement: Statement, deadline: float) -> Iterator[None]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            ParamValidationError,
        )

        db = self.config.name
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                yield
            except ClientError as exc:
                err = exc.response.get("Error", {})
                raise QueryFailed(
                    db, f"DynamoDB {exc.operation_name}: {err.get('Code')}: {err.get('Message')}"
                ) from exc
            except ParamValidationError as exc:
                raise QueryFailed(db, f"invalid DynamoDB request: {exc}") from exc
            except (EndpointConnectionError, NoCredentialsError) as exc:
                raise ConnectorUnavailable(db, str(exc)) from exc
            except BotoCoreError as exc:
                raise ConnectorUnavailable(db, f"DynamoDB call failed: {exc}") from exc
            except OSError as exc:
                raise ConnectorUnavailable(db, f"DynamoDB unreachable: {exc}") from exc
        if scope.cancelled_caught:
            raise QueryTimedOut(db, statement.timeout)

    # -- reads -----------------------------------------------------------------------------

    async def stream(self, statement: Statement) -> AsyncIterator[Batch]:
        req = parse(statement, self.config.name)
        deadline = anyio.current_time() + statement.timeout
        if not req.is_read:
            if statement.readonly:
                raise QueryFailed(
                    self.config.name,
                    f"DynamoDB {req.verb} writes; this statement is read-only",
                    suggestion="writes need a write grant (W/RW) in the permissions",
                )
            n = await self._write(req, statement, deadline)
            yield Batch(list(_ROWS_AFFECTED), rows=[(n,)])
            return
        shaper = RowShaper()
        sent = 0
        pages = self._pages(req, statement, deadline)
        async with contextlib.aclosing(pages) as items_pages:
            async for docs in items_pages:
                if not docs:
                    continue
                sent += len(docs)
                if statement.bulk:
                    yield await anyio.to_thread.run_sync(shaper.arrow, docs)
                else:
                    yield shaper.rows(docs)
        if sent == 0:
            yield Batch(_empty_columns(req, statement.options.get(LINK_OPTION)), rows=[])

    async def _pages(
        self, req: DynamoRequest, statement: Statement, deadline: float
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Result rows as documents, page by page, at most `max_rows` in all."""
        params = req.params
        total = _lowest(params.get("Limit"), statement.max_rows)
        if total == 0:
            return
        link = statement.options.get(LINK_OPTION)
        match req.verb:
            case "Query" | "Scan" if link is not None:
                async for page in self._linked(req, statement, deadline, total, link):
                    yield page
            case "Query" | "Scan":
                async for page in self._paged(req.verb, params, statement, deadline, total):
                    yield page
            case "ExecuteStatement":
                async for page in self._partiql(params, statement, deadline, total):
                    yield page
            case "GetItem":
                answer = await self._call("get_item", statement, deadline, **params)
                if answer.get("Item"):
                    yield [to_document(answer["Item"])]
            case "BatchGetItem":
                found = await self._batch_get(params["RequestItems"], statement, deadline)
                many = len(params["RequestItems"]) > 1
                docs = [
                    {"_table": table, **to_document(item)} if many else to_document(item)
                    for table, items in found.items()
                    for item in items
                ]
                yield docs[:total] if total is not None else docs
            case "TransactGetItems":
                answer = await self._call("transact_get_items", statement, deadline, **params)
                docs = [
                    to_document(r["Item"]) for r in answer.get("Responses", []) if r.get("Item")
                ]
                yield docs[:total] if total is not None else docs
            case "DescribeTable" | "DescribeTimeToLive" | "DescribeContinuousBackups":
                method = _snake(req.verb)
                answer = await self._call(method, statement, deadline, **params)
                body = {k: v for k, v in answer.items() if k != "ResponseMetadata"}
                (only,) = body.values() if len(body) == 1 else (body,)
                yield [only if isinstance(only, dict) else body]

    async def _paged(
        self,
        verb: str,
        params: dict[str, Any],
        statement: Statement,
        deadline: float,
        total: int | None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Query/Scan pages (`Limit` + `ExclusiveStartKey`) up to `total` items."""
        method = "query" if verb == "Query" else "scan"
        page_size = max(1, statement.batch_size)
        request = dict(params)
        request.pop("Limit", None)
        if request.get("Select") == "COUNT":
            count = 0
            while True:
                answer = await self._call(method, statement, deadline, **request)
                count += int(answer.get("Count", 0))
                if not answer.get("LastEvaluatedKey"):
                    break
                request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
            yield [{"count": count}]
            return
        sent = 0
        while total is None or sent < total:
            request["Limit"] = page_size if total is None else min(page_size, total - sent)
            answer = await self._call(method, statement, deadline, **request)
            items = answer.get("Items") or []
            if items:
                sent += len(items)
                yield [to_document(i) for i in items]
            last = answer.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    async def _partiql(
        self, params: dict[str, Any], statement: Statement, deadline: float, total: int | None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        page_size = max(1, statement.batch_size)
        request = dict(params)
        request.pop("Limit", None)
        sent = 0
        while total is None or sent < total:
            request["Limit"] = page_size if total is None else min(page_size, total - sent)
            answer = await self._call("execute_statement", statement, deadline, **request)
            items = answer.get("Items") or []
            if total is not None:
                items = items[: total - sent]
            if items:
                sent += len(items)
                yield [to_document(i) for i in items]
            token = answer.get("NextToken")
            if not token:
                return
            request["NextToken"] = token

    async def _batch_get(
        self, request_items: dict[str, Any], statement: Statement, deadline: float
    ) -> dict[str, list[dict[str, Any]]]:
        """One BatchGetItem, resubmitting unprocessed keys a bounded number of rounds."""
        found: dict[str, list[dict[str, Any]]] = {t: [] for t in request_items}
        pending = request_items
        for _ in range(UNPROCESSED_ROUNDS + 1):
            answer = await self._call("batch_get_item", statement, deadline, RequestItems=pending)
            for table, items in (answer.get("Responses") or {}).items():
                found.setdefault(table, []).extend(items)
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                return found
        left = sum(len(v.get("Keys", [])) for v in pending.values())
        raise QueryFailed(
            self.config.name,
            f"BatchGetItem left {left} keys unprocessed after {UNPROCESSED_ROUNDS} resubmissions",
            suggestion="the table is throttled: retry later, or raise its read capacity",
        )

    async def _linked(
        self,
        req: DynamoRequest,
        statement: Statement,
        deadline: float,
        total: int | None,
        link: dict[str, Any],
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A linked child: BatchGetItem by partition key, or IN filters of 100 operands."""
        column, values = link["column"], link["values"]
        params = req.params
        key = await self._partition_key(params["TableName"], statement, deadline)
        by_key = (
            req.verb == "Scan"
            and key is not None
            and key[0] == column
            and not {
                "FilterExpression",
                "ScanFilter",
                "IndexName",
                "Select",
                "Segment",
                "ExclusiveStartKey",
            }
            & set(params)
        )
        if req.verb == "Query" and key is not None and key[0] == column:
            raise QueryFailed(
                self.config.name,
                f"a linked Query cannot filter on its partition key {column!r} (DynamoDB "
                "refuses key attributes in a FilterExpression)",
                suggestion='link a {"verb": "Scan"} instead: it fetches the items by key',
            )
        sent = 0
        if by_key:
            assert key is not None
            async for docs in self._get_by_keys(params, key, values, statement, deadline):
                if total is not None:
                    docs = docs[: total - sent]
                sent += len(docs)
                yield docs
                if total is not None and sent >= total:
                    return
            return
        for chunk in chunks(values, MAX_IN_OPERANDS):
            filtered = link_filter(params, column, chunk)
            left = None if total is None else total - sent
            async for docs in self._paged(req.verb, filtered, statement, deadline, left):
                sent += len(docs)
                yield docs
            if total is not None and sent >= total:
                return

    async def _get_by_keys(
        self,
        params: dict[str, Any],
        key: tuple[str, str],
        values: list[dict[str, Any]],
        statement: Statement,
        deadline: float,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Items by partition key: BatchGetItem calls of 100 keys, BATCH_GET_IN_FLIGHT at once."""
        name, key_type = key
        table = params["TableName"]
        extra: dict[str, Any] = {
            k: params[k]
            for k in ("ProjectionExpression", "ExpressionAttributeNames", "ConsistentRead")
            if k in params
        }
        keys: list[dict[str, Any]] = []
        seen: set[bytes] = set()
        for value in values:
            typed = _as_key(value, key_type)
            mark = msgspec.json.encode(typed)
            if typed is not None and mark not in seen:
                seen.add(mark)
                keys.append({name: typed})
        groups = list(chunks(keys, MAX_BATCH_GET_KEYS))
        # waves of a few calls at once; nothing is yielded while a wave's task group is open
        # (a consumer that stops early then closes no stream under a running task)
        for at in range(0, len(groups), BATCH_GET_IN_FLIGHT):
            wave = groups[at : at + BATCH_GET_IN_FLIGHT]
            found: list[list[dict[str, Any]]] = [[] for _ in wave]

            async with anyio.create_task_group() as tg:
                for i, group in enumerate(wave):
                    tg.start_soon(
                        self._batch_get_into, found, i, table, group, extra, statement, deadline
                    )
            items = [item for part in found for item in part]
            if items:
                yield await anyio.to_thread.run_sync(_documents, items)

    async def _batch_get_into(
        self,
        found: list[list[dict[str, Any]]],
        i: int,
        table: str,
        keys: list[dict[str, Any]],
        extra: dict[str, Any],
        statement: Statement,
        deadline: float,
    ) -> None:
        answer = await self._batch_get({table: {"Keys": keys, **extra}}, statement, deadline)
        found[i] = answer.get(table, [])

    async def _partition_key(
        self, table: str, statement: Statement, deadline: float
    ) -> tuple[str, str] | None:
        if table not in self._keys:
            answer = await self._call("describe_table", statement, deadline, TableName=table)
            self._remember_keys(answer["Table"])
        return self._keys.get(table)

    def _remember_keys(self, desc: dict[str, Any]) -> None:
        types = {
            a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions", [])
        }
        for k in desc.get("KeySchema", []):
            if k.get("KeyType") == "HASH":
                name = k["AttributeName"]
                self._keys[desc["TableName"]] = (name, types.get(name, "S"))

    # -- writes ----------------------------------------------------------------------------

    async def execute_write(self, statement: Statement) -> int:
        req = parse(statement, self.config.name)
        if req.is_read:
            raise QueryFailed(self.config.name, f"{req.verb} is a read; execute_write takes writes")
        deadline = anyio.current_time() + statement.timeout
        return await self._write(req, statement, deadline)

    async def _write(self, req: DynamoRequest, statement: Statement, deadline: float) -> int:
        params = req.params
        match req.verb:
            case "BatchWriteItem":
                return await self._batch_write(params["RequestItems"], statement, deadline)
            case "TransactWriteItems":
                await self._call("transact_write_items", statement, deadline, **params)
                return len(params["TransactItems"])
            case _:
                await self._call(_snake(req.verb), statement, deadline, **params)
                return 1

    async def _batch_write(
        self, request_items: dict[str, Any], statement: Statement, deadline: float
    ) -> int:
        total = sum(len(v) for v in request_items.values())
        pending = request_items
        for _ in range(UNPROCESSED_ROUNDS + 1):
            answer = await self._call("batch_write_item", statement, deadline, RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
            if not pending:
                return total
        left = sum(len(v) for v in pending.values())
        raise QueryFailed(
            self.config.name,
            f"BatchWriteItem: {total - left} of {total} requests written; {left} left "
            f"unprocessed after {UNPROCESSED_ROUNDS} resubmissions",
            suggestion="the table is throttled: retry the rest later",
        )

    # -- discovery and links ---------------------------------------------------------------

    async def discover(self) -> list[TableInfo]:
        statement = Statement("discover", timeout=max(self._default_timeout, 60.0))
        deadline = anyio.current_time() + statement.timeout
        names: list[str] = []
        request: dict[str, Any] = {}
        while len(names) < MAX_TABLES:
            answer = await self._call("list_tables", statement, deadline, **request)
            names += answer.get("TableNames", [])
            if not answer.get("LastEvaluatedTableName"):
                break
            request["ExclusiveStartTableName"] = answer["LastEvaluatedTableName"]
        names = sorted(names[:MAX_TABLES])
        tables: dict[str, TableInfo] = {}
        limiter = anyio.CapacityLimiter(DISCOVERY_CONCURRENCY)

        async def one(name: str) -> None:
            async with limiter:
                desc = (await self._call("describe_table", statement, deadline, TableName=name))[
                    "Table"
                ]
                self._remember_keys(desc)
                sample = await self._call(
                    "scan", statement, deadline, TableName=name, Limit=SAMPLE_SIZE
                )
                tables[name] = _table_info(desc, _documents(sample.get("Items") or []))

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        return [tables[n] for n in names]

    def with_link(self, statement: Statement, link: LinkFilter) -> Statement:
        return apply_link(statement, link, self.config.name)

    def pool_stats(self) -> PoolStats | None:
        return None  # aiohttp keeps its pool private; /metrics counts query slots instead


@functools.cache
def _session() -> Any:
    """One botocore session for every DynamoDB database: it caches the service model, which
    costs about half a second to load per session."""
    from aiobotocore.session import get_session

    return get_session()


def _documents(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [to_document(i) for i in items]


def _as_key(value: dict[str, Any], key_type: str) -> dict[str, Any] | None:
    """A typed link value as the partition key's type (a BIGINT parent linking a string key
    sends "42"); a value that cannot be one is dropped (it matches no item)."""
    ((kind, raw),) = value.items()
    if kind == key_type:
        return value
    if key_type == "S" and kind == "N":
        return {"S": str(raw)}
    if key_type == "N" and kind == "S":
        try:
            decimal.Decimal(raw)
        except decimal.InvalidOperation:
            return None
        return {"N": raw}
    return None


def _table_info(desc: dict[str, Any], docs: list[dict[str, Any]]) -> TableInfo:
    """Fields from the sampled items; key attributes lead, typed from the key schema when
    the sample has none."""
    key_names = [k["AttributeName"] for k in desc.get("KeySchema", [])]
    key_types = {
        a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions", [])
    }
    fields = {f.name: f for f in infer_fields(docs)}
    out = []
    for name in key_names:
        f = fields.pop(name, None) or FieldInfo(
            name, _KEY_TYPES.get(key_types.get(name, "S"), "VARCHAR")
        )
        f.is_primary, f.nullable = True, False
        out.append(f)
    out += fields.values()
    return TableInfo(desc["TableName"], out, row_count_estimate=desc.get("ItemCount"))


def _empty_columns(req: DynamoRequest, link: dict[str, Any] | None) -> list[Column]:
    """Columns of a read that found nothing: the projected attributes, else the link column
    (a linked batch that matched nothing still gives the merge its key)."""
    names: list[str] = []
    projection = req.params.get("ProjectionExpression")
    if isinstance(projection, str):
        aliases = req.params.get("ExpressionAttributeNames") or {}
        for part in projection.split(","):
            head = re.split(r"[.\[]", part.strip(), maxsplit=1)[0]
            name = aliases.get(head, head)
            if name and name not in names:
                names.append(str(name))
    elif link is not None:
        names = [str(link["column"])]
    return [Column(n, "VARCHAR") for n in names]


def _lowest(body_limit: Any, max_rows: int | None) -> int | None:
    limits = [n for n in (body_limit, max_rows) if isinstance(n, int) and n >= 0]
    return min(limits) if limits else None


def _snake(verb: str) -> str:
    """`GetItem` -> `get_item` (the client's method name)."""
    return "".join("_" + c.lower() if c.isupper() else c for c in verb).lstrip("_")

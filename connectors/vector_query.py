"""The `vector` language's body, parsed once: the one definition the three backends
(pgvector, Qdrant, LanceDB) compile from and the safety language checks.

    {"intent": "search",    "vector": [...], "filter": F, "limit": 10, "with_payload": true,
                            "ef": 64, "probes": 8}
    {"intent": "near_text", "text": "waterproof hiking boots", ...as search}
    {"intent": "hybrid",    "text": "...", "vector": [...], "alpha": 0.5, ...as search}
    {"intent": "fetch",     "ids": [1, 2]}
    {"intent": "scroll",    "filter": F, "limit": 100, "offset": 0}
    {"intent": "count",     "filter": F}
    {"intent": "upsert",    "points": [{"id": 1, "vector": [...], "payload": {...}}]}  ("items")
    {"intent": "set_payload" | "update", "ids": [...] | "filter": F, "payload": {...}}
    {"intent": "delete",    "ids": [...] | "filter": F}     (an empty filter deletes everything)
    {"intent": "delete_all"}
    {"intent": "create_collection", "dimension": 384, "metric": "cosine"}
    {"intent": "drop_collection"}

`collection` may appear in any body and must then equal the step's table (checked by the
language; the backends always run on the step's table). Unknown keys, or keys that do not
belong to the intent, are refused. `hybrid` ranks by `alpha * sim(vector) + (1 - alpha) *
sim(embed(text))`: for cosine (unit query vectors) and dot that is exactly a search with the
blended query vector, which is what runs; `alpha` defaults to 0.5.

Filters (F) are JSON, never text: `{"field": value}` (equality; `null` = is null),
`{"field": {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte": value, "$in"|"$nin": [values]}}`,
`{"$and": [F...]}`, `{"$or": [F...]}`, `{"$not": F}`; several keys in one object are ANDed.
Values are strings, numbers or booleans. Field names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`,
dotted for nested payload keys in Qdrant). Depth, size and list lengths are bounded.

Rows: `id`, `score`, then the payload fields. `score` is the similarity for cosine (1 - cosine
distance) and dot (the inner product), the euclidean distance for l2 (lower is nearer); fetch,
scroll and count have no score.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np

READ_INTENTS = ("search", "near_text", "hybrid", "fetch", "scroll", "count")
WRITE_INTENTS = ("upsert", "set_payload", "update", "delete")
ADMIN_INTENTS = ("delete_all", "create_collection", "drop_collection")
INTENTS = READ_INTENTS + WRITE_INTENTS + ADMIN_INTENTS
SIMILARITY_INTENTS = ("search", "near_text", "hybrid")
METRICS = ("cosine", "dot", "l2")
Metric = Literal["cosine", "dot", "l2"]

# bounds (what any body may ask for, whatever the grant)
MAX_FILTER_DEPTH = 8
MAX_FILTER_NODES = 256
MAX_LIST_VALUES = 1_000  # one $in/$nin list
MAX_IDS = 10_000
MAX_POINTS = 10_000
MAX_DIMENSION = 4_096
MAX_EF = 1_000  # pgvector's own ceiling for hnsw.ef_search
MAX_PROBES = 1_000
MAX_TEXT_CHARS = 2_000
MAX_PAYLOAD_BYTES = 64 * 1024  # one point's payload, as JSON
DEFAULT_LIMIT = 10

_COMMON = frozenset({"intent", "collection"})
_SEARCH = frozenset({"filter", "limit", "offset", "with_payload", "ef", "probes"})
KEYS: dict[str, frozenset[str]] = {
    "search": _COMMON | _SEARCH | {"vector"},
    "near_text": _COMMON | _SEARCH | {"text"},
    "hybrid": _COMMON | _SEARCH | {"text", "vector", "alpha"},
    "fetch": _COMMON | {"ids", "with_payload"},
    "scroll": _COMMON | {"filter", "limit", "offset", "with_payload"},
    "count": _COMMON | {"filter"},
    "upsert": _COMMON | {"points", "items", "add_fields"},
    "set_payload": _COMMON | {"ids", "filter", "payload"},
    "update": _COMMON | {"ids", "filter", "payload"},
    "delete": _COMMON | {"ids", "filter"},
    "delete_all": _COMMON,
    "create_collection": _COMMON | {"dimension", "metric"},
    "drop_collection": _COMMON,
}
COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
LISTS = ("$in", "$nin")
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

Scalar = str | int | float | bool
PointId = int | str


class InvalidVectorQuery(ValueError):
    """A body that is not a valid vector query; `suggestion` says what to send instead."""

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion


# -- filters ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cond:
    """One comparison: `field op value`; op is one of COMPARISONS or LISTS (value a tuple)."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


Node = Cond | And | Or | Not


@dataclass(frozen=True, slots=True)
class Point:
    id: PointId
    vector: tuple[float, ...]
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VectorQuery:
    intent: str
    body: dict[str, Any]
    collection: str | None = None
    vector: tuple[float, ...] | None = None
    text: str | None = None
    alpha: float = 0.5
    filter: Node | None = None
    filter_given: bool = False  # a `filter` key was present (even an empty one)
    limit: int | None = None
    offset: int = 0
    with_payload: bool | tuple[str, ...] = True
    ef: int | None = None
    probes: int | None = None
    ids: tuple[PointId, ...] | None = None
    points: tuple[Point, ...] = ()
    payload: dict[str, Any] = field(default_factory=dict)
    dimension: int | None = None
    metric: Metric | None = None
    # an upsert may add payload fields a fixed-schema collection lacks (a structure change)
    add_fields: bool = False

    @property
    def is_read(self) -> bool:
        return self.intent in READ_INTENTS

    @property
    def deletes_everything(self) -> bool:
        """delete_all, or a delete/set_payload whose filter is empty and names no ids."""
        if self.intent == "delete_all":
            return True
        return (
            self.intent in ("delete", "set_payload", "update")
            and self.ids is None
            and self.filter is None
        )

    def fields(self) -> tuple[str, ...]:
        """Payload fields the body filters on, asks for or writes (for column denies)."""
        found: dict[str, None] = {}
        if self.filter is not None:
            found.update(dict.fromkeys(filter_fields(self.filter)))
        if isinstance(self.with_payload, tuple):
            found.update(dict.fromkeys(self.with_payload))
        found.update(dict.fromkeys(self.payload))
        for p in self.points:
            found.update(dict.fromkeys(p.payload))
        return tuple(f.split(".", 1)[0] for f in found)


def filter_fields(node: Node) -> list[str]:
    match node:
        case Cond(field=name):
            return [name]
        case And(items=items) | Or(items=items):
            return [f for item in items for f in filter_fields(item)]
        case Not(item=item):
            return filter_fields(item)
    return []


def _scalar(value: Any, where: str, *, allow_null: bool = False) -> Any:
    if value is None and allow_null:
        return None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidVectorQuery(f"{where}: {value} is not a finite number")
        return value
    raise InvalidVectorQuery(
        f"{where}: filter values are strings, numbers or booleans, not {type(value).__name__}",
        'write e.g. {"category": "boots"} or {"price": {"$lt": 100}}',
    )


class _FilterParser:
    def __init__(self) -> None:
        self.nodes = 0

    def parse(self, obj: Any, depth: int, where: str) -> Node | None:
        if depth > MAX_FILTER_DEPTH:
            raise InvalidVectorQuery(
                f"filter nests deeper than {MAX_FILTER_DEPTH} levels (at {where})",
                "flatten the filter: several keys in one object are ANDed",
            )
        if not isinstance(obj, dict):
            raise InvalidVectorQuery(
                f"{where}: a filter is a JSON object", '{"field": value} or {"$and": [...]}'
            )
        items: list[Node] = []
        for key, value in obj.items():
            here = f"{where}.{key}"
            self._count(here)
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise InvalidVectorQuery(f"{here} takes a non-empty list of filters")
                subs = [self.parse(v, depth + 1, f"{here}[{i}]") for i, v in enumerate(value)]
                kept = tuple(s for s in subs if s is not None)
                if len(kept) != len(subs):
                    raise InvalidVectorQuery(f"{here}: an empty filter inside {key}")
                items.append(And(kept) if key == "$and" else Or(kept))
            elif key == "$not":
                sub = self.parse(value, depth + 1, here)
                if sub is None:
                    raise InvalidVectorQuery(f"{here}: $not of an empty filter")
                items.append(Not(sub))
            elif key.startswith("$"):
                raise InvalidVectorQuery(
                    f"unknown filter operator {key!r} (at {where})",
                    f"use $and, $or, $not at the top; {', '.join(COMPARISONS + LISTS)} on a field",
                )
            else:
                items.extend(self._field(key, value, here))
        if not items:
            return None
        return items[0] if len(items) == 1 else And(tuple(items))

    def _count(self, where: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_FILTER_NODES:
            raise InvalidVectorQuery(
                f"filter has more than {MAX_FILTER_NODES} conditions (at {where})",
                "use $in with a list of values instead of many equalities",
            )

    def _field(self, name: str, spec: Any, where: str) -> list[Node]:
        if not FIELD_NAME.match(name) or len(name) > 128:
            raise InvalidVectorQuery(
                f"{where}: {name!r} is not a field name",
                "field names are identifiers (letters, digits, _; dots for nested payload keys)",
            )
        if not isinstance(spec, dict):
            return [Cond(name, "$eq", _scalar(spec, where, allow_null=True))]
        if not spec:
            raise InvalidVectorQuery(f"{where}: an empty condition")
        out: list[Node] = []
        for op, value in spec.items():
            self._count(f"{where}.{op}")
            if op in COMPARISONS:
                null_ok = op in ("$eq", "$ne")
                out.append(Cond(name, op, _scalar(value, f"{where}.{op}", allow_null=null_ok)))
            elif op in LISTS:
                if not isinstance(value, list) or not value:
                    raise InvalidVectorQuery(f"{where}.{op} takes a non-empty list of values")
                if len(value) > MAX_LIST_VALUES:
                    raise InvalidVectorQuery(
                        f"{where}.{op} lists {len(value)} values; at most {MAX_LIST_VALUES}",
                        "link the step to its parent instead of listing its keys",
                    )
                vals = tuple(_scalar(v, f"{where}.{op}[{i}]") for i, v in enumerate(value))
                out.append(Cond(name, op, vals))
            else:
                raise InvalidVectorQuery(
                    f"unknown condition {op!r} on field {name!r}",
                    f"use one of {', '.join(COMPARISONS + LISTS)}",
                )
        return out


# -- bodies ----------------------------------------------------------------------------------

_DECODER = msgspec.json.Decoder()


def _int(body: dict[str, Any], key: str, lo: int, hi: int | None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise InvalidVectorQuery(f"`{key}` must be an integer >= {lo}")
    if hi is not None and value > hi:
        raise InvalidVectorQuery(f"`{key}` is {value}; at most {hi}", f"ask for `{key}` <= {hi}")
    return value


_NUMBER_TYPES = frozenset({int, float})
_FLOAT_TYPE = frozenset({float})


def vector_of(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidVectorQuery(f"`{where}` must be a non-empty list of numbers")
    if len(value) > MAX_DIMENSION:
        raise InvalidVectorQuery(f"`{where}` has {len(value)} dimensions; at most {MAX_DIMENSION}")
    # checked in C (type set, numpy): a Python loop over 384 floats was half a parse
    kinds = set(map(type, value))
    if not kinds <= _NUMBER_TYPES:  # bool is its own type here: refused
        raise InvalidVectorQuery(f"`{where}` must hold finite numbers only")
    try:
        finite = bool(np.isfinite(np.asarray(value, dtype=np.float64)).all())
    except OverflowError:  # an integer beyond a double
        finite = False
    if not finite:
        raise InvalidVectorQuery(f"`{where}` must hold finite numbers only")
    return tuple(value) if kinds == _FLOAT_TYPE else tuple(map(float, value))


def _point_id(value: Any, where: str) -> PointId:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidVectorQuery(f"{where}: an id is an integer or a string")
    if isinstance(value, str) and not 0 < len(value) <= 256:
        raise InvalidVectorQuery(f"{where}: a string id has 1 to 256 characters")
    return value


def _ids(body: dict[str, Any]) -> tuple[PointId, ...] | None:
    if "ids" not in body:
        return None
    ids = body["ids"]
    if not isinstance(ids, list) or not ids:
        raise InvalidVectorQuery("`ids` must be a non-empty list")
    if len(ids) > MAX_IDS:
        raise InvalidVectorQuery(f"`ids` lists {len(ids)} ids; at most {MAX_IDS}")
    return tuple(dict.fromkeys(_point_id(v, f"ids[{i}]") for i, v in enumerate(ids)))


def _payload(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidVectorQuery(f"`{where}` must be a JSON object of field: value")
    for key in value:
        if not FIELD_NAME.match(key) or "." in key:
            raise InvalidVectorQuery(f"`{where}`: {key!r} is not a field name")
        if key in ("id", "score"):
            raise InvalidVectorQuery(f"`{where}`: {key!r} is a result column, not a payload field")
    if len(msgspec.json.encode(value)) > MAX_PAYLOAD_BYTES:
        raise InvalidVectorQuery(f"`{where}` is larger than {MAX_PAYLOAD_BYTES} bytes")
    return value


def _points(body: dict[str, Any]) -> tuple[Point, ...]:
    if "points" in body and "items" in body:
        raise InvalidVectorQuery("send `points` or `items`, not both")
    raw = body.get("points", body.get("items"))
    if not isinstance(raw, list) or not raw:
        raise InvalidVectorQuery(
            "`upsert` needs `points`: a non-empty list of {id, vector, payload}"
        )
    if len(raw) > MAX_POINTS:
        raise InvalidVectorQuery(f"`points` lists {len(raw)} points; at most {MAX_POINTS}")
    out: list[Point] = []
    dims: set[int] = set()
    for i, p in enumerate(raw):
        if not isinstance(p, dict) or "id" not in p or "vector" not in p:
            raise InvalidVectorQuery(f"points[{i}] must be an object with `id` and `vector`")
        extra = set(p) - {"id", "vector", "payload"}
        if extra:
            raise InvalidVectorQuery(f"points[{i}]: unknown key {sorted(extra)[0]!r}")
        vec = vector_of(p["vector"], f"points[{i}].vector")
        dims.add(len(vec))
        payload = _payload(p.get("payload", {}), f"points[{i}].payload")
        out.append(Point(_point_id(p["id"], f"points[{i}].id"), vec, payload))
    if len(dims) > 1:
        raise InvalidVectorQuery(f"points have vectors of different dimensions {sorted(dims)}")
    return tuple(out)


CACHE_MAX_CHARS = 16_384  # longer bodies (big upserts) are parsed every time, never kept


def parse(text: str) -> VectorQuery:
    """The body as a VectorQuery; raises InvalidVectorQuery naming what is wrong. Parsed
    once per text (the language and the backend both ask) unless the text is long."""
    if len(text) > CACHE_MAX_CHARS:
        return _parse(text)
    return _parse_cached(text)


@functools.lru_cache(maxsize=2048)
def _parse_cached(text: str) -> VectorQuery:
    return _parse(text)


def _parse(text: str) -> VectorQuery:
    try:
        body = _DECODER.decode(text)
    except msgspec.DecodeError as err:
        raise InvalidVectorQuery(
            f"vector body is not valid JSON: {err}",
            'send a JSON object such as {"intent": "near_text", "text": "...", "limit": 5}',
        ) from None
    if not isinstance(body, dict):
        raise InvalidVectorQuery("vector body must be a JSON object", '{"intent": "search", ...}')
    intent = body.get("intent")
    if intent not in KEYS:
        raise InvalidVectorQuery(
            f"unknown vector intent {intent!r}", f"use one of {', '.join(INTENTS)}"
        )
    unknown = sorted(set(body) - KEYS[intent])
    if unknown:
        raise InvalidVectorQuery(
            f"unknown key {unknown[0]!r} for intent {intent!r}",
            f"allowed keys: {', '.join(sorted(KEYS[intent]))}",
        )
    collection = body.get("collection")
    if collection is not None and not isinstance(collection, str):
        raise InvalidVectorQuery("`collection` must be a string")
    q: dict[str, Any] = {"intent": intent, "body": body, "collection": collection}
    if "filter" in body:
        q["filter_given"] = True
        q["filter"] = _FilterParser().parse(body["filter"], 1, "filter")
    if intent in ("search", "hybrid") and "vector" in body:
        q["vector"] = vector_of(body["vector"], "vector")
    if intent == "search" and "vector" not in body:
        raise InvalidVectorQuery("`search` needs a `vector`", "or use near_text with a `text`")
    if intent in ("near_text", "hybrid"):
        words = body.get("text")
        if not isinstance(words, str) or not words.strip():
            raise InvalidVectorQuery(f"`{intent}` needs a non-empty `text`")
        if len(words) > MAX_TEXT_CHARS:
            raise InvalidVectorQuery(f"`text` is longer than {MAX_TEXT_CHARS} characters")
        q["text"] = words
    if intent == "hybrid":
        alpha = body.get("alpha", 0.5)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise InvalidVectorQuery("`alpha` (the weight of `vector`) must be between 0 and 1")
        if "vector" not in body and alpha != 0:
            raise InvalidVectorQuery(
                "`hybrid` blends `vector` and `text`: send both, or alpha 0 for text alone"
            )
        q["alpha"] = float(alpha)
    limit = _int(body, "limit", 1, None)
    if limit is not None:
        q["limit"] = limit
    elif intent in SIMILARITY_INTENTS:
        q["limit"] = DEFAULT_LIMIT
    q["offset"] = _int(body, "offset", 0, None) or 0
    q["ef"] = _int(body, "ef", 1, MAX_EF)
    q["probes"] = _int(body, "probes", 1, MAX_PROBES)
    wp = body.get("with_payload", True)
    if isinstance(wp, list):
        for name in wp:
            if not isinstance(name, str) or not FIELD_NAME.match(name):
                raise InvalidVectorQuery(f"`with_payload`: {name!r} is not a field name")
        q["with_payload"] = tuple(dict.fromkeys(wp))
    elif isinstance(wp, bool):
        q["with_payload"] = wp
    else:
        raise InvalidVectorQuery("`with_payload` is true, false, or a list of field names")
    q["ids"] = _ids(body)
    if intent == "fetch" and q["ids"] is None:
        raise InvalidVectorQuery("`fetch` needs `ids`")
    if intent == "upsert":
        q["points"] = _points(body)
        add_fields = body.get("add_fields", False)
        if not isinstance(add_fields, bool):
            raise InvalidVectorQuery("`add_fields` is true or false")
        q["add_fields"] = add_fields
    if intent in ("set_payload", "update"):
        if "payload" not in body:
            raise InvalidVectorQuery(f"`{intent}` needs a `payload` object to set")
        q["payload"] = _payload(body["payload"], "payload")
        if not q["payload"]:
            raise InvalidVectorQuery("`payload` is empty: nothing to set")
    if intent in ("delete", "set_payload", "update"):
        if q["ids"] is None and not q.get("filter_given"):
            raise InvalidVectorQuery(
                f"`{intent}` needs `ids` or a `filter`",
                '`"filter": {}` means every point, and needs the A level',
            )
        if q["ids"] is not None and q.get("filter_given"):
            raise InvalidVectorQuery(f"`{intent}` takes `ids` or a `filter`, not both")
    if intent == "create_collection":
        q["dimension"] = _int(body, "dimension", 1, MAX_DIMENSION)
        if q["dimension"] is None:
            raise InvalidVectorQuery("`create_collection` needs a `dimension`")
        metric = body.get("metric", "cosine")
        if metric not in METRICS:
            raise InvalidVectorQuery(f"`metric` is one of {', '.join(METRICS)}")
        q["metric"] = metric
    return VectorQuery(**q)


def query_vector(query: VectorQuery, embedded: Any | None) -> tuple[float, ...]:
    """The vector a similarity intent searches with (`embedded`: the text's embedding)."""
    if query.intent == "search":
        assert query.vector is not None
        return query.vector
    assert embedded is not None
    text_vec = [float(x) for x in embedded]
    if query.intent == "near_text" or query.vector is None:
        return tuple(text_vec)
    a = query.alpha
    if len(query.vector) != len(text_vec):
        raise InvalidVectorQuery(
            f"`vector` has {len(query.vector)} dimensions, the text embedding {len(text_vec)}"
        )
    return tuple(a * v + (1 - a) * t for v, t in zip(query.vector, text_vec, strict=True))


def with_limit(text: str, fetch: int | None) -> str:
    """The body with the guardrails' fetch cap applied (cap + 1) to reads that return rows
    (memoised like `parse`: re-encoding a 384-float body per request was 4% of a search)."""
    if len(text) > CACHE_MAX_CHARS:
        return _with_limit(text, fetch)
    return _with_limit_cached(text, fetch)


@functools.lru_cache(maxsize=2048)
def _with_limit_cached(text: str, fetch: int | None) -> str:
    return _with_limit(text, fetch)


def _with_limit(text: str, fetch: int | None) -> str:
    query = parse(text)
    if fetch is None or query.intent not in ("search", "near_text", "hybrid", "scroll", "fetch"):
        return text
    if query.intent == "fetch" or (query.limit is not None and query.limit <= fetch):
        return text
    body = dict(query.body)
    body["limit"] = fetch
    return msgspec.json.encode(body).decode()

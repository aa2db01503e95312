"""es_dsl: the Elasticsearch / OpenSearch query DSL as a step body.

Two shapes (parsed by `connectors.es_request`, the connector's own parser, so what is checked
is what runs): a bare search body run against the step's table, or an envelope
`{"method", "path": "/<index>/<endpoint>[/<id>][?params]", "body"}` whose index must be the
step's table.

Operations (targets are indices; a bare body's target is the step's table):
- SELECT: `_search`, `_count`, `GET _doc/<id>`, `GET _source/<id>`, `_mget` (each doc's
  `_index`), `GET _mapping`, `_field_caps`; a `terms` lookup, `more_like_this` like/unlike
  documents, an `indexed_shape` or a `percolate` document of another index make that index a
  SELECT target too (RBAC must grant it).
- INSERT / UPDATE / DELETE (W): `PUT|POST _doc[/<id>]`, `_create/<id>`, `_update/<id>`,
  `DELETE _doc/<id>`, `_bulk` (each action line's index, index/create/update/delete),
  `_update_by_query`, `_delete_by_query`. A by-query write without a real query (none,
  `match_all`, or an empty bool) is unbounded: it needs A.
- DDL (A): create or delete the index, `_mapping` and `_settings` writes, `_alias(es)`,
  `_open`, `_close`, `_refresh`, `_flush`, `_forcemerge`, `_reindex` (source SELECT,
  destination DDL).

Always refused, at any depth and whatever the grant: `script`, `script_fields`,
`scripted_metric`, `runtime_mappings` (code run by the server), stored scripts (`/_scripts`)
and search templates (`_search/template`, `_render/template`, `_msearch/template`,
`id`-referenced templates), `_reindex` from a remote host, ingest `pipeline`s (they run
processors, scripts among them) and `wait_for_completion=false` (a background task whose
result lands in `.tasks`). Index templates, cluster settings and every other endpoint are
refused: they reach indices other than the step's table. Query parameters are allow-listed.

GUARDRAILS: hits `size` = min(size, cap + 1) (an absent size means "up to the cap", not
Elasticsearch's 10); `from + size` beyond the server's 10,000 window is refused with the
way out (the connector pages a plain read past 10,000 itself); a server-side `timeout`
(the lower of the body's and the statement's); the bucket counts of `terms`,
`significant_terms`, `multi_terms`, `composite` and `top_hits` capped at cap + 1.
`terminate_after` is not added: it stops collecting per shard and returns a silently
partial answer (a wrong count), which is worse than a timeout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from connectors.es_request import (
    CODE_SEARCH_KEYS,
    SEARCH_KEYS,
    BodyError,
    EsRequest,
    check_index,
    parse,
)
from safety.languages.base import Analysis, Language, Rewrite, StepView
from safety.text_cache import text_cache
from safety.types import Finding, Operation, TableRef
from safety.verdicts import Block

MAX_WINDOW = 10_000
# code the server runs: refused at any depth
CODE_KEYS = frozenset({"script", "script_fields", "scripted_metric", "runtime_mappings"})
# stored scripts and search templates, as endpoints
TEMPLATE_ENDPOINTS = frozenset(
    {
        "_scripts",
        "_render",
        "_search_shards",
        "_template",
        "_index_template",
        "_component_template",
        "_ingest",
    }
)
PARAMS = frozenset(
    {
        "routing",
        "refresh",
        "timeout",
        "conflicts",
        "preference",
        "version",
        "version_type",
        "if_seq_no",
        "if_primary_term",
        "op_type",
        "_source",
        "_source_includes",
        "_source_excludes",
        "stored_fields",
        "realtime",
        "max_docs",
        "slices",
        "requests_per_second",
        "scroll_size",
        "wait_for_active_shards",
        "search_type",
        "track_total_hits",
        "q",
        "df",
        "default_operator",
        "analyzer",
        "lenient",
        "ignore_unavailable",
        "allow_no_indices",
        "master_timeout",
        "include_type_name",
        "fields",
        "retry_on_conflict",
        "require_alias",
        "typed_keys",
    }
)
# (method, endpoint) -> operation for requests on the step's index; "" is the index itself
_INDEX_OPS: dict[tuple[str, str], Operation] = {
    **{(m, "_search"): "SELECT" for m in ("GET", "POST")},
    **{(m, "_count"): "SELECT" for m in ("GET", "POST")},
    **{(m, "_mget"): "SELECT" for m in ("GET", "POST")},
    **{(m, "_msearch"): "SELECT" for m in ("GET", "POST")},
    **{(m, "_field_caps"): "SELECT" for m in ("GET", "POST")},
    ("GET", "_doc"): "SELECT",
    ("HEAD", "_doc"): "SELECT",
    ("GET", "_source"): "SELECT",
    ("GET", "_mapping"): "SELECT",
    ("PUT", "_doc"): "INSERT",
    ("POST", "_doc"): "INSERT",
    ("PUT", "_create"): "INSERT",
    ("POST", "_create"): "INSERT",
    ("POST", "_update"): "UPDATE",
    ("DELETE", "_doc"): "DELETE",
    ("POST", "_bulk"): "INSERT",
    ("PUT", "_bulk"): "INSERT",
    ("POST", "_update_by_query"): "UPDATE",
    ("POST", "_delete_by_query"): "DELETE",
    ("PUT", ""): "DDL",
    ("DELETE", ""): "DDL",
    ("PUT", "_mapping"): "DDL",
    ("POST", "_mapping"): "DDL",
    ("PUT", "_settings"): "DDL",
    ("POST", "_close"): "DDL",
    ("POST", "_open"): "DDL",
    ("POST", "_refresh"): "DDL",
    ("POST", "_flush"): "DDL",
    ("POST", "_forcemerge"): "DDL",
    ("PUT", "_alias"): "DDL",
    ("POST", "_alias"): "DDL",
    ("DELETE", "_alias"): "DDL",
}
# cluster-level endpoints whose targets are in the body
_BODY_OPS: dict[tuple[str, str], Operation] = {
    ("POST", "_bulk"): "INSERT",
    ("PUT", "_bulk"): "INSERT",
    ("POST", "_mget"): "SELECT",
    ("GET", "_mget"): "SELECT",
    ("POST", "_msearch"): "SELECT",
    ("GET", "_msearch"): "SELECT",
    ("POST", "_reindex"): "DDL",
    ("POST", "_aliases"): "DDL",
}
# endpoints that take a document id after them
_ID_ENDPOINTS = frozenset({"_doc", "_create", "_update", "_source"})
_ID_REQUIRED = frozenset(
    {
        ("GET", "_doc"),
        ("HEAD", "_doc"),
        ("DELETE", "_doc"),
        ("PUT", "_doc"),
        ("GET", "_source"),
        ("POST", "_update"),
        ("PUT", "_create"),
        ("POST", "_create"),
    }
)
_SEVERITY: dict[str, int] = {"SELECT": 0, "INSERT": 1, "UPDATE": 2, "DELETE": 3, "DDL": 4}
_BULK_OPS: dict[str, Operation] = {
    "index": "INSERT",
    "create": "INSERT",
    "update": "UPDATE",
    "delete": "DELETE",
}
_BUCKET_SIZED = frozenset(
    {
        "terms",
        "significant_terms",
        "multi_terms",
        "composite",
        "top_hits",
        "significant_text",
        "rare_terms",
    }
)
_TIME = re.compile(r"^(\d+)(nanos|micros|ms|s|m|h|d)$")
_UNIT_S = {
    "nanos": 1e-9,
    "micros": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_ROW_ENDPOINTS = frozenset({"_search", "_mget", "_msearch"})
# what an _msearch header may say
_MSEARCH_HEADER = frozenset({"index", "preference", "routing", "search_type", "request_cache"})


@dataclass(frozen=True, slots=True)
class EsAnalysis:
    request: EsRequest | None
    error: str | None
    suggestion: str | None
    operation: Operation
    # (index or None for the step's table, operation), the step's own target first
    targets: tuple[tuple[str | None, Operation], ...] = ()
    unbounded: bool = False
    structural: tuple[Finding, ...] = ()
    injection_blocks: tuple[Finding, ...] = ()
    injection_warnings: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # top-level fields named anywhere in the body
    excluded: frozenset[str] = frozenset()  # fields a `_source` filter leaves out
    returns_all: bool = False  # whole `_source` documents come back


def _failed(error: str, suggestion: str | None) -> EsAnalysis:
    return EsAnalysis(None, error, suggestion, "SELECT")


@text_cache
def analyse_es(text: str) -> EsAnalysis:
    try:
        req = parse(text, None)
    except BodyError as err:
        return _failed(err.reason, err.suggestion)
    structural: list[Finding] = []
    blocks: list[Finding] = []
    lookups: list[str] = []
    _walk(req.body, blocks, structural, lookups, "$")
    for key, _ in req.params:
        if key not in PARAMS and key not in ("pipeline", "wait_for_completion"):
            structural.append(
                (
                    f"query parameter {key!r} is not allowed in an es_dsl path",
                    f"allowed: {', '.join(sorted(PARAMS))}",
                )
            )
    if req.param("pipeline") is not None:
        blocks.append(
            (
                "ingest pipelines run processors (scripts among them); never allowed",
                "index the documents as they should be stored",
            )
        )
    if req.param("wait_for_completion") is not None:
        structural.append(
            ("wait_for_completion is not allowed: sluice waits for every write", None)
        )
    targets: list[tuple[str | None, Operation]] = []
    own = None if not req.enveloped else req.index
    if req.endpoint in TEMPLATE_ENDPOINTS or (req.endpoint in ("_search", "_msearch") and req.rest):
        return _failed(
            f"{req.method} {req.url_path()}: stored scripts, search templates, ingest and "
            "index templates are never run through sluice",
            "send the search body itself",
        )
    op: Operation | None
    if req.index is None and req.enveloped:
        op = _BODY_OPS.get((req.method, req.endpoint))
        if op is None:
            return _failed(
                f"{req.method} {req.url_path()} does not name the step's index",
                "use /<table>/<endpoint>; cluster-level endpoints other than _bulk, _mget, "
                "_reindex and _aliases are not run through sluice",
            )
    else:
        op = _INDEX_OPS.get((req.method, req.endpoint))
        if op is None:
            return _failed(
                f"{req.method} {req.url_path()} is not an operation sluice runs",
                "reads: _search, _count, GET _doc/<id>, _mget, GET _mapping, _field_caps; "
                "writes: _doc, _create, _update, _bulk, _update_by_query, _delete_by_query",
            )
        if (req.method, req.endpoint) in _ID_REQUIRED and len(req.rest) != 1:
            return _failed(
                f"{req.method} /<index>/{req.endpoint} needs one document id",
                f"e.g. /<index>/{req.endpoint}/<id>",
            )
        if req.endpoint not in _ID_ENDPOINTS and req.endpoint not in ("_alias",) and req.rest:
            return _failed(
                f"unexpected path segments after {req.endpoint}: {'/'.join(req.rest)}", None
            )
        targets.append((own, op))
    body = req.body
    unbounded = False
    match req.endpoint:
        case "_search" | "_count" | "":
            if req.endpoint != "" and body is not None:
                if not isinstance(body, dict):
                    structural.append((f"the {req.endpoint} body must be an object", None))
                else:
                    unknown = sorted(set(body) - _search_keys())
                    if unknown:
                        structural.append((f"unknown search body key {unknown[0]!r}", None))
                    _check_window(body, structural)
        case "_bulk":
            targets = _bulk_targets(body, own, structural)
            worst: Operation = "INSERT"
            for _, line_op in targets:
                if _SEVERITY[line_op] > _SEVERITY[worst]:
                    worst = line_op
            op = worst
        case "_msearch":
            targets = _msearch_targets(body, own, structural)
        case "_mget":
            if req.index is None or (isinstance(body, dict) and body.get("docs")):
                targets = _mget_targets(body, own, structural)
        case "_reindex":
            targets = _reindex_targets(body, structural, blocks)
        case "_aliases":
            targets = _alias_targets(body, structural)
        case "_update_by_query" | "_delete_by_query":
            query = body.get("query") if isinstance(body, dict) else None
            unbounded = _matches_all(query) and req.param("q") is None
        case _:
            pass
    assert op is not None  # every branch above set it or returned
    targets += [(name, "SELECT") for name in dict.fromkeys(lookups) if name != own]
    fields, excluded, returns_all = _fields(req)
    return EsAnalysis(
        request=req,
        error=None,
        suggestion=None,
        operation=op,
        targets=tuple(dict.fromkeys(targets)),
        unbounded=unbounded,
        structural=tuple(structural),
        injection_blocks=tuple(blocks),
        fields=fields,
        excluded=excluded,
        returns_all=returns_all,
    )


def _search_keys() -> frozenset[str]:
    return SEARCH_KEYS | CODE_SEARCH_KEYS


def _check_window(body: Mapping[str, Any], structural: list[Finding]) -> None:
    start, size = body.get("from"), body.get("size")
    for name, v in (("from", start), ("size", size)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            structural.append((f"`{name}` must be a non-negative integer", None))
            return
    if start and start + (size if size is not None else 10) > MAX_WINDOW:
        structural.append(
            (
                f"from + size is past the server's window of {MAX_WINDOW:,} hits",
                "page with `search_after` (sort values of the last hit), or drop `from`: "
                "sluice pages a plain read past 10,000 by itself",
            )
        )


def _matches_all(query: Any) -> bool:
    if query is None or query == {"match_all": {}}:
        return True
    if isinstance(query, Mapping) and set(query) == {"match_all"}:
        return True
    if isinstance(query, Mapping) and set(query) == {"bool"}:
        inner = query["bool"]
        if not isinstance(inner, Mapping):
            return False
        parts = [inner.get(k) for k in ("must", "filter", "should", "must_not")]
        if not any(parts):
            return True
        clauses = [c for p in parts[:3] if p for c in (p if isinstance(p, list) else [p])]
        return not parts[3] and all(_matches_all(c) for c in clauses)
    return False


def _index_list(value: Any) -> list[str] | None:
    names = value if isinstance(value, list) else [value]
    if not all(isinstance(n, str) for n in names):
        return None
    return [str(n) for n in names]


def _valid_index(name: str, structural: list[Finding], where: str) -> bool:
    try:
        check_index(name)
    except BodyError as err:
        structural.append((f"{err.reason} (at {where})", err.suggestion))
        return False
    return True


def _bulk_targets(
    body: Any, own: str | None, structural: list[Finding]
) -> list[tuple[str | None, Operation]]:
    if not isinstance(body, list) or not body:
        structural.append(
            (
                "a _bulk body is a non-empty list of action and source lines",
                '[{"index": {"_id": "1"}}, {"field": "value"}, ...]',
            )
        )
        return []
    out: list[tuple[str | None, Operation]] = []
    i = 0
    while i < len(body):
        line = body[i]
        if not isinstance(line, dict) or len(line) != 1:
            structural.append((f"_bulk line {i} must be one action object", None))
            return out
        ((action, meta),) = line.items()
        op = _BULK_OPS.get(action)
        if op is None or not isinstance(meta, dict):
            structural.append(
                (f"unknown _bulk action {action!r} (line {i})", "index, create, update or delete")
            )
            return out
        index = meta.get("_index", own)
        if index is None:
            structural.append((f"_bulk line {i} names no index", "set `_index` or the path"))
            return out
        if not isinstance(index, str) or not _valid_index(index, structural, f"line {i}"):
            return out
        if "pipeline" in meta:
            structural.append((f"_bulk line {i}: ingest pipelines are not allowed", None))
        out.append((None if index == own else index, op))
        i += 1 if action == "delete" else 2
        if action != "delete" and i > len(body):
            structural.append((f"_bulk action on line {i - 2} has no source line", None))
    return list(dict.fromkeys(out))


def _mget_targets(
    body: Any, own: str | None, structural: list[Finding]
) -> list[tuple[str | None, Operation]]:
    docs = body.get("docs") if isinstance(body, dict) else None
    if not isinstance(docs, list):
        if own is not None:
            return [(None, "SELECT")]
        structural.append(("a cluster-level _mget needs `docs` naming each `_index`", None))
        return []
    out: list[tuple[str | None, Operation]] = []
    for i, d in enumerate(docs):
        index = d.get("_index", own) if isinstance(d, dict) else None
        if not isinstance(index, str) or not _valid_index(index, structural, f"docs[{i}]"):
            structural.append((f"_mget docs[{i}] names no index", None))
            continue
        out.append((None if index == own else index, "SELECT"))
    return list(dict.fromkeys(out))


def _msearch_targets(
    body: Any, own: str | None, structural: list[Finding]
) -> list[tuple[str | None, Operation]]:
    """Each header's index (or the path's) is a read target; bodies are search bodies."""
    if not isinstance(body, list) or not body or len(body) % 2:
        structural.append(
            (
                "an _msearch body is a list of header and search body pairs",
                '[{"index": "<table>"}, {"query": {...}}, ...]',
            )
        )
        return []
    out: list[tuple[str | None, Operation]] = []
    for i in range(0, len(body), 2):
        header, search = body[i], body[i + 1]
        if not isinstance(header, dict) or not isinstance(search, dict):
            structural.append((f"_msearch line {i} or {i + 1} is not an object", None))
            return out
        unknown = sorted(set(header) - _MSEARCH_HEADER)
        if unknown:
            structural.append(
                (
                    f"unknown _msearch header key {unknown[0]!r} (line {i})",
                    f"allowed: {', '.join(sorted(_MSEARCH_HEADER))}",
                )
            )
        bad = sorted(set(search) - SEARCH_KEYS - CODE_SEARCH_KEYS)
        if bad:
            structural.append((f"unknown search body key {bad[0]!r} (line {i + 1})", None))
        if "aggs" in search or "aggregations" in search:
            structural.append(
                (
                    f"aggregations in _msearch (line {i + 1}) are not run",
                    "send each aggregation as a step of its own",
                )
            )
        _check_window(search, structural)
        index = header.get("index", own)
        if not isinstance(index, str) or not _valid_index(index, structural, f"line {i}"):
            structural.append((f"_msearch line {i} names no index", None))
            continue
        out.append((None if index == own else index, "SELECT"))
    return list(dict.fromkeys(out))


def _reindex_targets(
    body: Any, structural: list[Finding], blocks: list[Finding]
) -> list[tuple[str | None, Operation]]:
    source = body.get("source") if isinstance(body, dict) else None
    dest = body.get("dest") if isinstance(body, dict) else None
    if not isinstance(source, dict) or not isinstance(dest, dict):
        structural.append(("_reindex needs `source` and `dest` objects", None))
        return []
    if "remote" in source:
        blocks.append(
            (
                "_reindex from a remote host; never allowed",
                "reindex between indices of this cluster",
            )
        )
    if "pipeline" in dest:
        blocks.append(("_reindex through an ingest pipeline; never allowed", None))
    out: list[tuple[str | None, Operation]] = []
    names = _index_list(source.get("index"))
    if not names:
        structural.append(("_reindex source.index must name indices", None))
    out += [(n, "SELECT") for n in names or [] if _valid_index(n, structural, "source.index")]
    target = dest.get("index")
    if isinstance(target, str) and _valid_index(target, structural, "dest.index"):
        out.append((target, "DDL"))
    else:
        structural.append(("_reindex dest.index must name one index", None))
    return out


def _alias_targets(body: Any, structural: list[Finding]) -> list[tuple[str | None, Operation]]:
    actions = body.get("actions") if isinstance(body, dict) else None
    if not isinstance(actions, list):
        structural.append(("_aliases needs `actions`", None))
        return []
    out: list[tuple[str | None, Operation]] = []
    for i, a in enumerate(actions):
        if not isinstance(a, dict) or len(a) != 1:
            structural.append((f"_aliases actions[{i}] must be one action", None))
            continue
        ((_, spec),) = a.items()
        if not isinstance(spec, dict):
            continue
        for key in ("index", "indices", "alias", "aliases"):
            names = _index_list(spec.get(key, [])) or []
            out += [(n, "DDL") for n in names if _valid_index(n, structural, f"actions[{i}]")]
    return out


def _walk(
    node: Any, blocks: list[Finding], structural: list[Finding], lookups: list[str], path: str
) -> None:
    """Code keys and reads of other indices, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in CODE_KEYS:
                blocks.append(
                    (
                        f"`{key}` (at {here}) runs code on the server; never allowed",
                        "express it with queries and aggregations; compute in the merge SQL",
                    )
                )
                continue
            if key == "terms" and isinstance(value, dict):
                for field, spec in value.items():
                    if isinstance(spec, dict) and "index" in spec:
                        _lookup(spec.get("index"), lookups, structural, f"{here}.{field}")
            elif key == "more_like_this" and isinstance(value, dict):
                for side in ("like", "unlike"):
                    items = value.get(side)
                    for item in items if isinstance(items, list) else [items]:
                        if isinstance(item, dict) and "_index" in item:
                            _lookup(item["_index"], lookups, structural, f"{here}.{side}")
            elif key == "indexed_shape" and isinstance(value, dict) and "index" in value:
                _lookup(value["index"], lookups, structural, here)
            elif key == "percolate" and isinstance(value, dict) and "index" in value:
                _lookup(value["index"], lookups, structural, here)
            elif key == "id" and path.endswith(("template", "script")):
                structural.append((f"stored templates (at {here}) are never run", None))
            _walk(value, blocks, structural, lookups, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, blocks, structural, lookups, f"{path}[{i}]")


def _lookup(index: Any, lookups: list[str], structural: list[Finding], where: str) -> None:
    if isinstance(index, str) and _valid_index(index, structural, where):
        lookups.append(index)
    elif not isinstance(index, str):
        structural.append((f"the index read at {where} must be one index name", None))


def _fields(req: EsRequest) -> tuple[tuple[str, ...], frozenset[str], bool]:
    if req.endpoint == "_msearch" and isinstance(req.body, list):
        # each search on its own: the union of fields, the exclusions every search makes
        parts = [
            _fields(EsRequest("POST", req.index, "_search", body=b))
            for b in req.body[1::2]
            if isinstance(b, dict)
        ]
        found = tuple(dict.fromkeys(f for p in parts for f in p[0]))
        excluded = frozenset.intersection(*(p[1] for p in parts)) if parts else frozenset()
        return found, excluded, any(p[2] for p in parts)
    return _fields_one(req)


def _fields_one(req: EsRequest) -> tuple[tuple[str, ...], frozenset[str], bool]:
    """Top-level field names the body names (over-approximated: every key and every
    `field`/`fields` value), the fields `_source` excludes, and whether whole documents
    come back."""
    found: dict[str, None] = {}
    body = req.body

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and not k.startswith("_"):
                    found[k.split(".", 1)[0]] = None
                if k in ("field", "fields", "path") and isinstance(v, str | list):
                    for f in v if isinstance(v, list) else [v]:
                        if isinstance(f, str):
                            found[f.split(".", 1)[0].split("^", 1)[0]] = None
                walk(v)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body)
    for s in (body.get("sort") if isinstance(body, dict) else None) or []:
        if isinstance(s, str):
            found[s.split(".", 1)[0]] = None
    excluded: set[str] = set()
    returns_all = False
    if req.endpoint in ("_search", "_doc", "_source", "_mget") and req.method in ("GET", "POST"):
        source = body.get("_source", True) if isinstance(body, dict) else True
        includes: list[str] = []
        if isinstance(source, str):
            includes = [source]
        elif isinstance(source, list):
            includes = [s for s in source if isinstance(s, str)]
        elif isinstance(source, dict):
            includes = [s for s in _as_list(source.get("includes")) if isinstance(s, str)]
            excluded = {
                s.split(".", 1)[0] for s in _as_list(source.get("excludes")) if isinstance(s, str)
            }
        if req.param("_source_includes"):
            includes = (req.param("_source_includes") or "").split(",")
        hits = not (
            isinstance(body, dict)
            and ("aggs" in body or "aggregations" in body)
            and not body.get("size")
        )
        wildcard = any("*" in s for s in includes)
        returns_all = source is not False and hits and (not includes or wildcard)
        found.update(dict.fromkeys(s.split(".", 1)[0] for s in includes if "*" not in s))
        if _has_top_hits(body):
            returns_all = True
    found.pop("", None)
    return tuple(found), frozenset(excluded), returns_all


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [] if v is None else [v]


def _has_top_hits(node: Any) -> bool:
    if isinstance(node, dict):
        return "top_hits" in node or any(_has_top_hits(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_top_hits(v) for v in node)
    return False


# -- GUARDRAILS ----------------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """An Elasticsearch time value ("500ms", "2s", "1m") in seconds; None when not one."""
    if isinstance(value, str) and (m := _TIME.match(value.strip())):
        return int(m.group(1)) * _UNIT_S[m.group(2)]
    return None


@text_cache
def rewrite_es(text: str, cap: int | None, timeout_ms: int) -> str:
    analysis = analyse_es(text)
    req = analysis.request
    assert req is not None
    if req.endpoint == "_msearch" and isinstance(req.body, list):
        lines = [
            _guard_search(line, cap, timeout_ms) if i % 2 and isinstance(line, dict) else line
            for i, line in enumerate(req.body)
        ]
        return req.with_body(lines).to_text()
    if req.endpoint != "_search" or not isinstance(req.body or {}, dict):
        return text
    return req.with_body(_guard_search(dict(req.body or {}), cap, timeout_ms)).to_text()


def _guard_search(body: dict[str, Any], cap: int | None, timeout_ms: int) -> dict[str, Any]:
    """One search body with its timeout, its size at cap + 1 and its bucket sizes capped."""
    body = dict(body)
    given = parse_time(body.get("timeout"))
    if given is None or given * 1000 > timeout_ms:
        body["timeout"] = f"{timeout_ms}ms"
    if cap is not None:
        fetch = cap + 1
        size = body.get("size")
        if size is None or size > fetch:
            body["size"] = fetch
        for key in ("aggs", "aggregations"):
            if isinstance(body.get(key), dict):
                body[key] = _cap_buckets(body[key], fetch)
    return body


def _cap_buckets(aggs: dict[str, Any], fetch: int) -> dict[str, Any]:
    out = {}
    for name, definition in aggs.items():
        if not isinstance(definition, dict):
            out[name] = definition
            continue
        d = dict(definition)
        for kind in _BUCKET_SIZED & set(d):
            spec = d[kind]
            if isinstance(spec, dict):
                spec = dict(spec)
                size = spec.get("size")
                if kind in ("composite",) or size is not None or kind == "top_hits":
                    if not isinstance(size, int) or size > fetch:
                        spec["size"] = min(fetch, MAX_WINDOW) if kind == "composite" else fetch
                elif size is None:
                    pass
                if isinstance(spec.get("shard_size"), int) and spec["shard_size"] > fetch * 10:
                    spec["shard_size"] = fetch * 10
                d[kind] = spec
        for sub in ("aggs", "aggregations"):
            if isinstance(d.get(sub), dict):
                d[sub] = _cap_buckets(d[sub], fetch)
        out[name] = d
    return out


# -- the Language --------------------------------------------------------------------------


class EsDslLanguage(Language):
    """Elasticsearch / OpenSearch query DSL bodies (see the module docstring)."""

    name: ClassVar[str] = "es_dsl"
    examples: ClassVar[tuple[str, ...]] = (
        '{"query": {"bool": {"filter": [{"term": {"status": "open"}}, {"range": {"total": '
        '{"gte": 100}}}]}}, "_source": ["customer_id", "total"], "sort": [{"total": "desc"}], '
        '"size": 50}',
        '{"query": {"range": {"at": {"gte": "2024-01-01"}}}, "aggs": {"by_status": {"terms": '
        '{"field": "status"}}}}',
        '{"method": "POST", "path": "/orders/_count", "body": {"query": {"term": {"status": '
        '"open"}}}}',
        '{"method": "GET", "path": "/orders/_doc/o-1001"}',
    )

    def analyse(self, text: str, dialect: str) -> EsAnalysis:
        return analyse_es(text)

    def declared(self, table: str) -> TableRef:
        return TableRef(table)

    def access(self, analysis: Analysis, table: str) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, EsAnalysis)
        if analysis.error is not None:
            return []
        return [(TableRef(name or table), op) for name, op in analysis.targets]

    def unbounded_targets(
        self, analysis: Analysis, access: list[tuple[TableRef, Operation]], declared: TableRef
    ) -> list[tuple[TableRef, Operation]]:
        assert isinstance(analysis, EsAnalysis)
        if not analysis.unbounded:
            return []
        return [(ref, op) for ref, op in access if op in ("UPDATE", "DELETE") and ref == declared]

    def target_problem(self, analysis: Analysis, step: StepView) -> Finding | None:
        assert isinstance(analysis, EsAnalysis)
        req = analysis.request
        if req is None or not req.enveloped:
            return None
        if req.index is None:
            # a cluster-level _bulk/_mget/_reindex/_aliases: the step must name an index the
            # body touches (for _reindex, where it writes), so the checked table is a target
            named = {name for name, op in analysis.targets if name is not None}
            if req.endpoint == "_reindex":
                named = {name for name, op in analysis.targets if op == "DDL" and name}
            if named and step.table not in named:
                return (
                    f"{req.endpoint} touches {', '.join(sorted(named))}, but the step's table "
                    f"is {step.table!r}",
                    "set the step's table to the index the body writes",
                )
            return None
        if req.index != step.table:
            return (
                f"the path names index {req.index!r}, but the step's table is {step.table!r}",
                f"use /{step.table}/{req.endpoint or ''} or set the step's table to the "
                "index the path names",
            )
        return None

    def column_block(self, analysis: Analysis, step: StepView) -> Block | None:
        assert isinstance(analysis, EsAnalysis)
        grant = step.grant(self.declared(step.table))
        denied = grant.deny_columns
        if not denied:
            return None
        where = f"{step.database}.{step.table}"
        for field in analysis.fields:
            if field.lower() in denied:
                return Block(
                    f"Access denied: field {where}.{field} is denied; policy "
                    f"{grant.entry}.deny_columns",
                    f"remove {field} from the body, or from {grant.entry}.deny_columns",
                    f"{grant.entry}.deny_columns",
                )
        hidden = {f.lower() for f in analysis.excluded}
        if analysis.returns_all and not denied <= hidden:
            return Block(
                f"Access denied: whole documents of {where} would return denied fields "
                f"({', '.join(sorted(denied))})",
                'list the fields you need in `_source` (["a", "b"]) or exclude the denied '
                'ones ({"excludes": [...]})',
                f"{grant.entry}.deny_columns",
            )
        return None

    def prompt_text(self, query: str) -> str:
        # a JSON body: its strings are data, judged by the later stages; anything else is
        # read for destructive intent ("delete all documents")
        return "" if query.lstrip().startswith(("{", "[")) else query

    def rewrite(
        self, analysis: Analysis, query: str, dialect: str, cap: int, timeout: float
    ) -> Rewrite:
        assert isinstance(analysis, EsAnalysis)
        req = analysis.request
        rows = req is not None and req.endpoint in _ROW_ENDPOINTS and analysis.operation == "SELECT"
        row_cap = cap if rows else None
        return Rewrite(rewrite_es(query, row_cap, max(1, int(timeout * 1000))), row_cap)

    def empty_probe(self, statement: Any, connector: Any, link_column: str | None) -> Any:
        """The same search with `size` 0 and no aggregations: the hit columns, no rows."""
        import dataclasses

        req = analyse_es(statement.text).request
        body = dict(req.body or {}) if req is not None and isinstance(req.body, dict) else {}
        body.pop("aggs", None)
        body.pop("aggregations", None)
        body["size"] = 0
        text = req.with_body(body).to_text() if req is not None else statement.text
        return dataclasses.replace(statement, text=text)

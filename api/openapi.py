"""/openapi.json generated from the route table and the msgspec types (one source of truth)."""

from __future__ import annotations

from typing import Any

import msgspec

from api.auth import OPEN_PATHS
from api.envelopes import ErrorEnvelope, QueryBlocked
from api.routes import Endpoint
from api.version import VERSION

_DESCRIPTIONS = {
    400: "Malformed body or invalid request",
    401: "Missing or invalid token",
    403: "Blocked by the safety pipeline, or a refused web Origin",
    404: "Unknown database, table or result",
    409: "Conflict",
    413: "Body, stored result or inline answer too large",
    415: "Body not sent as application/json",
    421: "Host not in server.allowed_hosts",
    422: "Validation failed",
    429: "Rate, queue or per-principal limit (Retry-After)",
    500: "Connector or merge failure",
    503: "Not ready, database unavailable, or the server at its bounds (Retry-After)",
    504: "Query timed out",
    507: "Spill space (limits.merge_temp_limit) used up",
}


# Answers any operation past the open probes may get from the middleware in front of it:
# a foreign Host (421), a refused Origin (403), admission or rate bounds (429, 503); with a
# body also its size (413) and content type (415).
GUARDED = (403, 421, 429, 503)
WITH_BODY = (413, 415)


def _errors(e: Endpoint) -> list[int]:
    extra: tuple[int, ...] = ()
    if e.path not in OPEN_PATHS:
        extra += GUARDED + (WITH_BODY if e.body is not None else ())
    return sorted({*e.errors, *extra})


def _param_schema(default: Any) -> dict[str, Any]:
    """A query parameter's schema, typed by its default (an integer page, a string filter)."""
    if isinstance(default, bool):
        return {"type": "boolean", "default": default}
    if isinstance(default, int):
        return {"type": "integer", "default": default}
    if isinstance(default, float):
        return {"type": "number", "default": default}
    if isinstance(default, str):
        return {"type": "string", "default": default}
    return {"type": "string"}


def _any_items(node: Any) -> None:
    """`list[Any]` comes out of msgspec as an array without `items`; say "any" explicitly
    (`items: {}`) so client generators accept it."""
    if isinstance(node, dict):
        if node.get("type") == "array" and "items" not in node and "prefixItems" not in node:
            node["items"] = {}
        for value in node.values():
            _any_items(value)
    elif isinstance(node, list):
        for value in node:
            _any_items(value)


def _operation_id(e: Endpoint, taken: set[str]) -> str:
    """The handler's name (`run_logs`, `simple_query`), made unique with the method."""
    name = getattr(e.handler, "__name__", "") or e.path.strip("/").replace("/", "_")
    name = name.strip("_") or "op"
    if name in taken:
        name = f"{e.method.lower()}_{name}"
    taken.add(name)
    return name


def build_openapi(endpoints: list[Endpoint]) -> dict[str, Any]:
    types: list[Any] = [ErrorEnvelope, QueryBlocked]
    for e in endpoints:
        responses = e.response if isinstance(e.response, tuple) else (e.response,)
        types += [t for t in (*responses, e.body) if t is not None and t not in types]
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    ref = dict(zip(types, schemas, strict=True))
    _any_items(components)
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for e in endpoints:
        op: dict[str, Any] = {
            "operationId": _operation_id(e, taken),
            "summary": e.summary,
            "responses": {},
        }
        params = [
            {
                "name": n,
                "in": "query",
                "required": False,
                "description": d,
                "schema": _param_schema(default),
            }
            for n, d, default in e.query
        ]
        params += [
            {"name": p.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
            for p in e.path.split("/")
            if p.startswith("{")
        ]
        if params:
            op["parameters"] = params
        if e.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref[e.body]}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if isinstance(e.response, tuple):
            schema = {"anyOf": [ref[t] for t in e.response]}
            ok["content"] = {"application/json": {"schema": schema}}
        elif e.response is not None:
            ok["content"] = {"application/json": {"schema": ref[e.response]}}
        for status in (e.status, *e.also):
            op["responses"][str(status)] = ok
        errors = set(_errors(e))
        if e.path in OPEN_PATHS:
            op["security"] = []  # probes, metrics and this document never need a token
        else:
            errors |= {401, 429}  # with auth.tokens: a missing/wrong token, a rate limit
        if e.body is not None:
            errors |= {400, 413}  # a body that does not decode, or is over the limit
        for code in sorted(errors):
            schema = ref[ErrorEnvelope]
            if code == 403 and 403 in e.errors:  # blocked by safety, or a refused Origin
                schema = {"anyOf": [ref[QueryBlocked], ref[ErrorEnvelope]]}
            op["responses"][str(code)] = {
                "description": _DESCRIPTIONS.get(code, "Error"),
                "content": {"application/json": {"schema": schema}},
            }
        op.update(e.extra)
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "sluice", "version": VERSION},
        "paths": paths,
        "security": [{"bearerAuth": []}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from auth.tokens in sluice.yaml (none configured: "
                    "no token needed, loopback only)",
                }
            },
        },
    }

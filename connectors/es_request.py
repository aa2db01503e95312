"""The es_dsl body of an Elasticsearch/OpenSearch step, parsed into one request.

Two shapes (one JSON object in `Statement.text`):

- a bare search body: `{"query", "size", "from", "sort", "_source", "aggs", ...}`, run as
  `POST /<table>/_search` against the step's table;
- an envelope: `{"method": "GET|POST|PUT|DELETE", "path": "/<index>/<endpoint>[/<id>]
  [?param=value&...]", "body": {...} | [...]}`. `_bulk` and `_msearch` take a list body
  (their NDJSON lines, one object each).

The parser keeps the path as parts (index, endpoint, id, query parameters), never as text,
and the connector builds the URL from those parts with every segment quoted, so the request
that runs is exactly the one parsed and checked: `..`, empty segments, wildcards and index
lists are refused here, not normalised away by the HTTP client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import msgspec

Method = Literal["GET", "POST", "PUT", "DELETE", "HEAD"]
METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "HEAD")

# keys of a search body the connector runs; anything else is refused by name
SEARCH_KEYS: frozenset[str] = frozenset(
    {
        "query",
        "size",
        "from",
        "sort",
        "_source",
        "aggs",
        "aggregations",
        "search_after",
        "track_total_hits",
        "track_scores",
        "timeout",
        "terminate_after",
        "min_score",
        "post_filter",
        "highlight",
        "collapse",
        "docvalue_fields",
        "fields",
        "stored_fields",
        "explain",
        "version",
        "seq_no_primary_term",
        "indices_boost",
        "rescore",
        "suggest",
    }
)
# keys that run code: parsed so the language refuses them by name (safety/languages/es_dsl.py)
CODE_SEARCH_KEYS: frozenset[str] = frozenset({"script_fields", "runtime_mappings"})
ENVELOPE_KEYS: frozenset[str] = frozenset({"method", "path", "body"})

# characters Elasticsearch forbids in an index name, plus the pattern/list characters
_BAD_INDEX = set('\\/*?"<>| ,#:')


class BodyError(ValueError):
    """A body that cannot be parsed: `reason` names what is wrong, `suggestion` what to do."""

    def __init__(self, reason: str, suggestion: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.suggestion = suggestion


@dataclass(frozen=True, slots=True)
class EsRequest:
    """One HTTP request to the cluster, as parts.

    `index` is None for cluster-level endpoints (`/_bulk`, `/_reindex`, `/_mget`...).
    `endpoint` is the first `_`-segment after the index ("" for the index itself: create,
    delete, info), `rest` the segments after it (a document id, `scroll`...).
    `enveloped` says whether the body came in an envelope (a bare body runs as `_search`).
    """

    method: str
    index: str | None
    endpoint: str
    rest: tuple[str, ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    body: Any = None
    enveloped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def doc_id(self) -> str | None:
        return self.rest[0] if self.rest else None

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    def url_path(self) -> str:
        """The request path, every segment quoted (nothing the parser did not see)."""
        segments = ([self.index] if self.index else []) + ([self.endpoint] if self.endpoint else [])
        segments += list(self.rest)
        return "/" + "/".join(quote(s, safe="") for s in segments)

    def with_body(self, body: Any) -> EsRequest:
        return EsRequest(
            self.method,
            self.index,
            self.endpoint,
            self.rest,
            self.params,
            body,
            self.enveloped,
            self.extra,
        )

    def to_text(self) -> str:
        """This request as an es_dsl body again (the shape it came in)."""
        if not self.enveloped:
            return msgspec.json.encode(self.body if self.body is not None else {}).decode()
        path = self.url_path()
        if self.params:
            path += "?" + "&".join(
                f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.params
            )
        env: dict[str, Any] = {"method": self.method, "path": path}
        if self.body is not None:
            env["body"] = self.body
        return msgspec.json.encode(env).decode()


_DECODER = msgspec.json.Decoder()


def decode(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except msgspec.DecodeError as err:
        raise BodyError(
            f"es_dsl body is not valid JSON: {err}",
            'send a search body such as {"query": {"match_all": {}}} or an envelope '
            '{"method": "GET", "path": "/<index>/_search", "body": {...}}',
        ) from err


def parse(text: str, table: str | None) -> EsRequest:
    """The request a body describes. `table` is the step's index (the bare body's target;
    None leaves a bare body's index unset, for analysis)."""
    body = decode(text)
    if not isinstance(body, dict):
        raise BodyError(
            "es_dsl body must be a JSON object",
            'send {"query": {...}} or {"method": ..., "path": ..., "body": ...}',
        )
    if "method" in body or "path" in body:
        return parse_envelope(body)
    unknown = sorted(set(body) - SEARCH_KEYS - CODE_SEARCH_KEYS)
    if unknown:
        raise BodyError(
            f"unknown search body key {unknown[0]!r}",
            f"a bare body is a search body ({', '.join(sorted(SEARCH_KEYS))}); other "
            'endpoints go in an envelope {"method", "path", "body"}',
        )
    if table is not None:  # None: analysis, where the step's table is filled in later
        check_index(table)
    return EsRequest("POST", table, "_search", body=body)


def parse_envelope(env: Mapping[str, Any]) -> EsRequest:
    unknown = sorted(set(env) - ENVELOPE_KEYS)
    if unknown:
        raise BodyError(
            f"unknown envelope key {unknown[0]!r}", "an envelope has `method`, `path` and `body`"
        )
    method = env.get("method")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise BodyError(f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
    path = env.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise BodyError("`path` must be a string starting with /", "e.g. /<index>/_search")
    split = urlsplit(path)
    if split.scheme or split.netloc or split.fragment:
        raise BodyError("`path` must be a path on the cluster, not a URL", "e.g. /<index>/_search")
    raw_segments = split.path.split("/")[1:]
    if raw_segments and raw_segments[-1] == "":
        raw_segments.pop()  # a trailing slash
    segments = [unquote(s) for s in raw_segments]
    for s in segments:
        if s in ("", ".", "..") or "/" in s:
            raise BodyError(f"invalid path segment {s!r} in {path!r}", "e.g. /<index>/_search")
    try:
        params = tuple(parse_qsl(split.query, keep_blank_values=True, strict_parsing=True))
    except ValueError as err:
        raise BodyError(f"invalid query string in {path!r}: {err}") from err
    index: str | None = None
    if segments and not segments[0].startswith("_"):
        index = segments.pop(0)
        check_index(index)
    endpoint = segments.pop(0) if segments else ""
    body = env.get("body")
    if body is not None and not isinstance(body, dict | list):
        raise BodyError("`body` must be a JSON object (or a list of lines for _bulk/_msearch)")
    return EsRequest(method.upper(), index, endpoint, tuple(segments), params, body, enveloped=True)


def check_index(name: str) -> None:
    """An index name that names exactly one index (no pattern, list or date math)."""
    if (
        not name
        or name != name.lower()
        or name[0] in "-_+"
        or name in (".", "..")
        or any(c in _BAD_INDEX for c in name)
        or name.startswith("<")
    ):
        raise BodyError(
            f"{name!r} is not one index name",
            "name exactly one index (lower case, no wildcard, list or date math)",
        )

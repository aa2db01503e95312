"""A linked Cypher step's filter: the batch of parent values as the list parameter
`$sluice_link`, ANDed into the step's own query (never pasted into the text)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from connectors.base import LinkFilter, Statement
from connectors.cypher_tokens import (
    AGGREGATES,
    LINK_PARAM,
    Kind,
    Token,
    keyword,
    match_brackets,
    statement,
    top_level,
    union_branches,
)
from connectors.errors import QueryFailed


class LinkRefused(ValueError):
    """Raised when a step's text cannot take a link filter; the message says why."""


def linked(statement: Statement, link: LinkFilter, database: str) -> Statement:
    """A graph connector's `with_link`: the predicate ANDed into the text, the batch kept in
    the statement's options and bound as `$sluice_link` when it runs (`link_params`)."""
    try:
        text = link_text(statement.text, link.column)
    except LinkRefused as exc:
        raise QueryFailed(database, f"cannot link this step: {exc}") from exc
    options = {**statement.options, "link": list(link.values)}
    return dataclasses.replace(statement, text=text, params=(), options=options)


def link_params(statement: Statement) -> dict[str, Any]:
    """The query parameters a (possibly linked) statement runs with."""
    return {LINK_PARAM: statement.options["link"]} if "link" in statement.options else {}


@functools.lru_cache(maxsize=256)
def link_text(text: str, column: str) -> str:
    """Restrict the rows to those whose `column` is in the list parameter `$sluice_link`.

    When the column is a returned property `var.prop`, the predicate goes into the first
    MATCH that binds `var` (so the server can use an index); otherwise the rows are filtered
    just before the final RETURN (`WITH * WHERE <expr> IN $sluice_link`). Aggregates cannot be
    linked (filtering before the aggregate would change it).
    """
    text, tokens = statement(text)
    if len(union_branches(tokens)) > 1:
        raise LinkRefused("a linked Cypher step cannot use UNION")
    top = top_level(tokens)
    returns = [i for i in top if keyword(tokens, i) == "RETURN"]
    if not returns:
        raise LinkRefused("a linked Cypher step must RETURN the link column")
    ret = returns[-1]
    end = next(
        (i for i in top if i > ret and keyword(tokens, i) in ("ORDER", "SKIP", "LIMIT")),
        len(tokens),
    )
    item = _find_item(text, tokens, ret + 1, end, column)
    if item is None:
        raise LinkRefused(f"the step does not RETURN a column named {column!r}")
    a, b = item
    expr = text[tokens[a].start : tokens[b - 1].end]
    if any(t.kind is Kind.WORD and t.text.lower() in AGGREGATES for t in tokens[a:b]):
        raise LinkRefused(f"the link column {column!r} is an aggregate; link on a grouping key")
    if b - a == 3 and tokens[a + 1].text == "." and tokens[a].ident and tokens[a + 2].ident:
        var = tokens[a].ident or ""
        spot = _binding_match(tokens, top, var)
        if spot is not None:
            return _into_match(text, tokens, top, spot, expr)
    pos = tokens[ret].start
    if tokens[ret - 1].upper == "DISTINCT" if ret > 0 else False:
        pos = tokens[ret].start
    return f"{text[:pos]}WITH * WHERE {expr} IN ${LINK_PARAM} {text[pos:]}"


def _find_item(
    text: str, tokens: list[Token], lo: int, hi: int, column: str
) -> tuple[int, int] | None:
    """The RETURN item whose alias, or whose text, is `column`."""
    if lo < hi and tokens[lo].upper == "DISTINCT":
        lo += 1
    pair = match_brackets(tokens)
    items, start, i = [], lo, lo
    while i < hi:
        t = tokens[i]
        if t.kind is Kind.PUNCT and t.text in "([{":
            i = pair[i] + 1
            continue
        if t.kind is Kind.PUNCT and t.text == ",":
            items.append((start, i))
            start = i + 1
        i += 1
    items.append((start, hi))
    for a, b in items:
        if b - a >= 3 and tokens[b - 2].upper == "AS":
            if tokens[b - 1].ident == column:
                return a, b - 2
        elif text[tokens[a].start : tokens[b - 1].end] == column:
            return a, b
    return None


def _binding_match(tokens: list[Token], top: list[int], var: str) -> int | None:
    """The index of the first top-level MATCH (not OPTIONAL) whose patterns bind `var`."""
    for i in top:
        if keyword(tokens, i) != "MATCH" or (i > 0 and tokens[i - 1].upper == "OPTIONAL"):
            continue
        end = _match_end(tokens, top, i)
        for k in range(i + 1, end):
            if tokens[k].text == "(" and k + 1 < end and tokens[k + 1].ident == var:
                return i
        # only the first MATCH may take it: a later one would filter after earlier clauses
    return None


def _match_end(tokens: list[Token], top: list[int], i: int) -> int:
    """The index of the clause after the MATCH at i (its WHERE belongs to it)."""
    for k in top:
        if k > i and keyword(tokens, k) not in ("", "WHERE"):
            return k
    return len(tokens)


def _into_match(text: str, tokens: list[Token], top: list[int], i: int, expr: str) -> str:
    end = _match_end(tokens, top, i)
    where = next((k for k in top if i < k < end and keyword(tokens, k) == "WHERE"), None)
    pred = f"{expr} IN ${LINK_PARAM}"
    tail = tokens[end - 1].end
    if where is None:
        return f"{text[:tail]} WHERE {pred}{text[tail:]}"
    start = tokens[where].end
    return f"{text[:start]} {pred} AND ({text[start:tail].strip()}){text[tail:]}"

"""GUARDRAILS' SQL rewrite: a row cap on every SELECT branch, emitted in the same dialect.

Each UNION branch is capped as well as the outer result (a branch can never stream more
than the cap into the database's sort/dedup); INTERSECT/EXCEPT branches are left alone, since
capping them would change which rows qualify. An existing smaller LIMIT is kept, a larger
one (or LIMIT ALL, or a non-literal one) becomes the cap. The cached AST is copied first,
and comments are dropped on output (a comment holding `*/` can never re-open as SQL).
Known edge: under UNION (distinct) a branch capped at cap + 1 rows may drop rows that
would have deduplicated into a final result under the cap.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlglot
from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.generator import Generator
from sqlglot.tokenizer_core import TokenType

from safety.languages.sql_parse import _EXPLAIN, parse
from safety.text_cache import text_cache


def _regexp_operator(gen: Generator, e: exp.RegexpLike) -> str:
    return gen.binary(e, "REGEXP") if e.args.get("flag") is None else gen.function_fallback_sql(e)


# MySQL output that MariaDB also runs: sqlglot writes `x REGEXP p` as REGEXP_LIKE(), a
# function MariaDB does not have; the operator works on both. The compiled sqlglot
# (sqlglotc) refuses Python subclasses of its generators, so the one instance's dispatch
# table gets the override instead (sqlglot is pinned; tests/safety covers the output).
_MYSQL_OVERRIDES: dict[type[exp.Expr], Callable[..., str]] = {exp.RegexpLike: _regexp_operator}
_mysql_dispatch: list[dict[type[exp.Expr], Callable[..., str]]] = []


def generate(tree: exp.Expression, dialect: str) -> str:
    """`tree` as `dialect` SQL, comments dropped; the tree is not modified."""
    if dialect != "mysql":
        return tree.sql(dialect=dialect, comments=False)
    gen = MySQL().generator(comments=False)
    if not _mysql_dispatch:
        _mysql_dispatch.append({**gen._dispatch, **_MYSQL_OVERRIDES})
    gen._dispatch = _mysql_dispatch[0]
    return gen.generate(tree, copy=True)


@text_cache
def rewrite_sql(dialect: str, text: str, fetch: int | None) -> str:
    """The text the connector runs: `fetch` (= cap + 1) rows at most for a query."""
    parsed = parse(dialect, text)
    tree = parsed.tree
    assert tree is not None, "rewrite_sql runs only on a statement that passed AST_CHECKER"
    tree = tree.copy()
    m = _EXPLAIN.match(text)
    keep_written_names(tree, dialect, text[m.end() :] if m else text)
    if fetch is not None:
        tree = cap_rows(tree, fetch, dialect)
    sql = generate(tree, dialect)
    return f"{parsed.explain}{sql}" if parsed.explain else sql


def cap_rows(tree: exp.Expression, fetch: int, dialect: str) -> exp.Expression:
    if isinstance(tree, exp.Union):
        _cap_branches(tree, fetch, dialect)
    if isinstance(tree, exp.Select | exp.SetOperation):
        _cap(tree, fetch)
    elif isinstance(tree, exp.Subquery):
        _cap(tree, fetch)
    return tree


def _cap(node: exp.Expression, fetch: int) -> None:
    fetch_clause = node.args.get("fetch")
    if isinstance(fetch_clause, exp.Fetch):  # FETCH FIRST n ROWS ONLY
        count = _literal(fetch_clause.args.get("count"))
        if count is None or count > fetch:
            fetch_clause.set("count", exp.Literal.number(fetch))
        return
    limit = node.args.get("limit")
    current = _literal(limit.expression) if isinstance(limit, exp.Limit) else None
    if current is None or current > fetch:
        node.set("limit", exp.Limit(expression=exp.Literal.number(fetch)))


def _cap_branches(union: exp.Union, fetch: int, dialect: str) -> None:
    for side in ("this", "expression"):
        branch = union.args[side]
        if isinstance(branch, exp.Union):
            _cap_branches(branch, fetch, dialect)
            continue
        inner = branch.this if isinstance(branch, exp.Subquery) else branch
        if not isinstance(inner, exp.Select):
            continue
        limit = inner.args.get("limit")
        current = _literal(limit.expression) if isinstance(limit, exp.Limit) else None
        if current is not None and current <= fetch:
            continue
        capped = inner.copy()
        _cap(capped, fetch)
        if dialect == "sqlite":
            # SQLite refuses a LIMIT inside a compound member, parenthesised or not
            wrapped: exp.Expression = exp.select("*").from_(exp.Subquery(this=capped))
        else:
            wrapped = exp.Subquery(this=capped)
        union.set(side, wrapped)


def _literal(node: exp.Expression | None) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return int(node.this)
        except ValueError:
            return None
    return None


# --- column names as written ----------------------------------------------------------------
# Several databases name an unaliased result column after the expression's text as written
# (SQLite and MySQL `count(*)`, DuckDB `CAST(x AS text)`), so a regenerated `COUNT(*)` would
# rename it. The outer SELECT's unaliased expressions are therefore emitted verbatim: the
# same tokens the analysis saw, and the column names the client would get without sluice.
_SPLIT_STOP = frozenset(
    {
        TokenType.FROM,
        TokenType.INTO,
        TokenType.WHERE,
        TokenType.GROUP_BY,
        TokenType.HAVING,
        TokenType.ORDER_BY,
        TokenType.LIMIT,
        TokenType.FETCH,
        TokenType.OFFSET,
        TokenType.UNION,
        TokenType.EXCEPT,
        TokenType.INTERSECT,
        TokenType.WINDOW,
        TokenType.QUALIFY,
        TokenType.SEMICOLON,
    }
)
_OPEN = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE})
_CLOSE = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE})


def _projection_spans(dialect: str, body: str) -> list[tuple[int, int]] | None:
    """(start, end) of each expression of the first top-level SELECT list, or None when
    the list cannot be delimited with confidence (a comment inside, an odd modifier)."""
    tokens = sqlglot.tokenize(body, read=dialect)
    depth, i = 0, 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.token_type in _OPEN:
            depth += 1
        elif tok.token_type in _CLOSE:
            depth -= 1
        elif depth == 0 and tok.token_type == TokenType.SELECT:
            break
        i += 1
    else:
        return None
    i += 1
    while i < len(tokens) and tokens[i].token_type in (TokenType.DISTINCT, TokenType.ALL):
        i += 1
    spans: list[tuple[int, int]] = []
    first: int | None = None
    last = 0
    for tok in tokens[i:]:
        if depth == 0 and (tok.token_type in _SPLIT_STOP or tok.token_type == TokenType.COMMA):
            if first is None:
                return None
            spans.append((first, last))
            first = None
            if tok.token_type != TokenType.COMMA:
                return spans
            continue
        raw = body[tok.start : tok.end + 1]
        if tok.comments or "\\" in raw or "$" in raw:
            # a comment, or quoting the database may read differently than sqlglot
            # (backslash escapes, dollar quoting): the generated text is the safe choice
            return None
        if tok.token_type in _OPEN:
            depth += 1
        elif tok.token_type in _CLOSE:
            depth -= 1
        if depth == 0 and tok.token_type == TokenType.ON and first is None:
            return None  # DISTINCT ON (...) and the like: leave it to the generator
        first = tok.start if first is None else first
        last = tok.end
    if first is not None:
        spans.append((first, last))
    return spans


def _outer_select(tree: exp.Expression) -> exp.Select | None:
    """The SELECT whose list names the result columns (the leftmost branch of a UNION)."""
    node = tree
    while isinstance(node, exp.SetOperation):
        node = node.this
    return node if isinstance(node, exp.Select) else None


def keep_written_names(tree: exp.Expression, dialect: str, body: str) -> None:
    """Put the outer SELECT's unaliased expressions back as written (see above)."""
    select = _outer_select(tree)
    if select is None:
        return
    todo = [
        i
        for i, e in enumerate(select.expressions)
        if not isinstance(e, exp.Alias | exp.Column | exp.Star)
    ]
    if not todo:
        return
    spans = _projection_spans(dialect, body)
    if spans is None or len(spans) != len(select.expressions):
        return
    for i in todo:
        start, end = spans[i]
        select.expressions[i].replace(exp.var(body[start : end + 1]))

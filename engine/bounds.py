"""Bounds on the shape of a request, checked before any work is planned or run.

A DAG's steps and depth, and the nesting of a body or run config document, are refused with
a 400 naming the bound and its setting, instead of running thousands of native queries or
overflowing Python's stack (a RecursionError) deep inside a parser or a planner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from engine.config import LimitsConfig
from engine.errors import InvalidQuery, TooDeeplyNested
from engine.ir import FederatedQuery

T = TypeVar("T")


def check_steps(query: FederatedQuery, limits: LimitsConfig, max_chars: int) -> None:
    """Refuse a DAG with more steps than `limits.max_steps`, or a merge longer than a query
    may be (`safety.max_query_chars`), before it is parsed, validated or checked."""
    if len(query.steps) > limits.max_steps:
        raise InvalidQuery(
            f"{len(query.steps)} steps is more than limits.max_steps ({limits.max_steps})",
            suggestion="split the work into several queries, or raise limits.max_steps",
        )
    if query.merge is not None and len(query.merge) > max_chars:
        raise InvalidQuery(
            f"the merge has {len(query.merge)} characters, more than "
            f"safety.max_query_chars ({max_chars})",
            suggestion="shorten the merge (a join on a small step table instead of a long "
            "CASE), or raise safety.max_query_chars",
        )


def dag_depth(parents: Mapping[str, Sequence[str]], order: Sequence[str]) -> int:
    """The number of steps on the longest depends_on chain (`order`: parents first)."""
    depth: dict[str, int] = {}
    for sid in order:
        depth[sid] = 1 + max((depth[p] for p in parents[sid] if p in depth), default=0)
    return max(depth.values(), default=0)


def check_depth(parents: Mapping[str, Sequence[str]], order: Sequence[str], limit: int) -> None:
    depth = dag_depth(parents, order)
    if depth > limit:
        raise InvalidQuery(
            f"the longest depends_on chain has {depth} steps, more than "
            f"limits.max_dag_depth ({limit})",
            suggestion="flatten the chain (steps may share a parent), or raise "
            "limits.max_dag_depth",
        )


def nesting(value: Any) -> int:
    """How deeply dicts and lists nest in `value` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def check_nesting(value: Any, limit: int, what: str) -> None:
    depth = nesting(value)
    if depth > limit:
        raise TooDeeplyNested(what, limit, depth)


def parse_bounded(parse: Callable[[], T], what: str, limit: int) -> T:
    """Run a parser whose recursion follows the input's nesting: past Python's stack it is
    the input's fault (400), not the server's."""
    try:
        return parse()
    except RecursionError:
        raise TooDeeplyNested(what, limit) from None

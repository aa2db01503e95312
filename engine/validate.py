"""Graph checks on a federated request, before anything runs (graphlib for order and cycles).

Every error is an `InvalidQuery` (HTTP 400) whose message names the step at fault, except an
unknown database, which is a `StepUnknownDatabase` (HTTP 404, as the reference does), and a
merge that does more than read the step tables, `MergeBlocked` (HTTP 400, see merge.py).
"""

from __future__ import annotations

import graphlib
import re
from collections.abc import Collection
from dataclasses import dataclass

from sqlglot import exp

from engine.errors import InvalidQuery, StepUnknownDatabase
from engine.ir import FederatedQuery, StepSpec
from engine.merge import check_merge, parse_merge

# step ids become DuckDB table names, written unquoted in merges
STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# a link column: a column name or a dotted path to a nested field (MQL), nothing else
LINK_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,127}(\.[A-Za-z_$][A-Za-z0-9_$]{0,127}){0,15}$")


@dataclass(frozen=True, slots=True)
class Link:
    """A resolved link: the child's `to_column` must equal a value of `parent.from_column`."""

    parent: str
    from_column: str
    to_column: str


def validate(query: FederatedQuery, databases: Collection[str]) -> dict[str, Link]:
    """Check the DAG; return each linked step's resolved link, keyed by step_id."""
    return validate_query(query, databases)[0]


def validate_query(
    query: FederatedQuery, databases: Collection[str]
) -> tuple[dict[str, Link], exp.Expression | None]:
    """Check the DAG and the merge; return each linked step's resolved link (keyed by
    step_id) and the parsed, checked merge (None without one), parsed here once.

    Raises:
        InvalidQuery: naming the step (or the merge) at fault.
        StepUnknownDatabase: a step names a database that is not configured.
    """
    steps = query.steps
    if not steps:
        raise InvalidQuery(
            "a federated query needs at least one step",
            suggestion=('add {"step_id": "s0", "database": ..., "table": ..., "query": ...}'),
        )
    by_id: dict[str, StepSpec] = {}
    folded: dict[str, str] = {}
    for i, step in enumerate(steps):
        sid = step.step_id
        if not STEP_ID.match(sid):
            raise InvalidQuery(
                f"steps[{i}]: step_id {sid!r} is not a valid table name",
                step_id=sid,
                suggestion="use letters, digits and _ (not first), at most 63 chars, e.g. s0",
            )
        if sid.lower() in folded:  # DuckDB table names are case-insensitive
            raise InvalidQuery(
                f"duplicate step_id {sid!r} (steps[{i}] repeats {folded[sid.lower()]!r})",
                step_id=sid,
            )
        folded[sid.lower()] = sid
        by_id[sid] = step
        if step.database not in databases:
            raise StepUnknownDatabase(sid, step.database, list(databases))

    for step in steps:
        for dep in step.depends_on:
            if dep == step.step_id:
                raise InvalidQuery(f"step {step.step_id!r} depends on itself", step_id=step.step_id)
            if dep not in by_id:
                raise InvalidQuery(
                    f"step {step.step_id!r} depends on unknown step {dep!r}",
                    step_id=step.step_id,
                    suggestion=f"known steps: {', '.join(by_id)}",
                )
        if len(set(step.depends_on)) != len(step.depends_on):
            raise InvalidQuery(
                f"step {step.step_id!r} lists a dependency twice", step_id=step.step_id
            )

    sorter = graphlib.TopologicalSorter({s.step_id: s.depends_on for s in steps})
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        cycle = list(err.args[1])
        # graphlib lists each node before the step that depends on it: parent -> child
        path = " -> ".join(cycle)
        raise InvalidQuery(
            f"steps form a cycle: {path}", step_id=cycle[0], suggestion="depends_on must form a DAG"
        ) from err

    links = {s.step_id: link for s in steps if (link := _resolve_link(s, by_id)) is not None}
    return links, _check_merge(query, by_id)


def _resolve_link(step: StepSpec, by_id: dict[str, StepSpec]) -> Link | None:
    sid = step.step_id
    if step.link_from is None and step.link_to is None:
        return None
    if step.link_from is None or step.link_to is None:
        missing = "link_to" if step.link_to is None else "link_from"
        raise InvalidQuery(
            f"step {sid!r} sets only one of link_from/link_to ({missing} is missing)", step_id=sid
        )
    if not step.depends_on:
        raise InvalidQuery(
            f"step {sid!r} has a link but no parent (depends_on is empty)",
            step_id=sid,
            suggestion="add the parent step to depends_on",
        )
    prefix, dot, column = step.link_from.partition(".")
    if dot:
        if prefix not in step.depends_on:
            raise InvalidQuery(
                f"step {sid!r}: link_from {step.link_from!r} names step {prefix!r}, which "
                f"is not one of its parents ({', '.join(step.depends_on)})",
                step_id=sid,
            )
        parent = prefix
    elif len(step.depends_on) > 1:
        raise InvalidQuery(
            f"step {sid!r}: link_from {step.link_from!r} is ambiguous with several parents "
            f"({', '.join(step.depends_on)})",
            step_id=sid,
            suggestion=f"qualify it, e.g. {step.depends_on[0]}.{step.link_from}",
        )
    else:
        parent, column = step.depends_on[0], step.link_from
    if not column or not step.link_to:
        raise InvalidQuery(f"step {sid!r}: empty link column", step_id=sid)
    for name, value in (("link_from", column), ("link_to", step.link_to)):
        if not LINK_COLUMN.match(value):
            raise InvalidQuery(
                f"step {sid!r}: {name} {value!r} is not a column name",
                step_id=sid,
                suggestion="name one column of the step's result (letters, digits, _, $; "
                "a dotted path for a nested field)",
            )
    return Link(parent=parent, from_column=column, to_column=step.link_to)


def _check_merge(query: FederatedQuery, by_id: dict[str, StepSpec]) -> exp.Expression | None:
    if query.merge is None or not query.merge.strip():
        if len(by_id) > 1:
            raise InvalidQuery(
                f"{len(by_id)} steps need a merge to say how to combine them",
                suggestion="e.g. SELECT ... FROM s0 JOIN s1 ON ...",
            )
        return None
    tree = parse_merge(query.merge)
    check_merge(tree, by_id)
    return tree

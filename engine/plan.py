"""The execution plan: a validated DAG of step nodes with their parents, children and links.

Like sqlglot's planner, `Plan` has `.dag` (step -> parents) and `.roots`, and its repr prints
the tree; that text is the `explain` output (tests/engine/snapshots/ keeps it).
"""

from __future__ import annotations

import graphlib
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlglot import exp

from engine.ir import FederatedQuery, StepSpec
from engine.validate import Link, validate_query
from safety.types import CheckedStep, CheckRequest, SafetyOutcome


@dataclass(slots=True)
class Node:
    """One step of the plan. `link` is set when the step is filtered by a parent's values."""

    spec: StepSpec
    parents: tuple[str, ...]
    children: list[str] = field(default_factory=list)
    link: Link | None = None

    @property
    def step_id(self) -> str:
        return self.spec.step_id

    @property
    def waits_for(self) -> tuple[str, ...]:
        """Parents that must finish before this step starts (all but the linked one)."""
        linked = self.link.parent if self.link else None
        return tuple(p for p in self.parents if p != linked)


@dataclass(slots=True)
class Plan:
    """A validated DAG. `merge_tree` is the merge parsed and checked once (None: a lone
    step's table is the result); `keep()` prunes stripped steps without validating again."""

    nodes: dict[str, Node]
    order: tuple[str, ...]  # a topological order (parents first)
    merge: str | None
    dropped: tuple[str, ...] = ()  # steps removed because they (or a parent) were stripped
    merge_tree: exp.Expression | None = None

    def keep(self, keep: Collection[str]) -> Plan:
        """This plan without the steps not in `keep` and every step depending on one."""
        gone: set[str] = set()
        dropped = list(self.dropped)
        for sid in self.order:  # parents come first, so a dropped parent is known here
            node = self.nodes[sid]
            if sid not in keep or any(p in gone for p in node.parents):
                gone.add(sid)
                dropped.append(sid)
        order = tuple(sid for sid in self.order if sid not in gone)
        nodes = {
            sid: Node(spec=self.nodes[sid].spec, parents=self.nodes[sid].parents,
                      link=self.nodes[sid].link)
            for sid in order
        }  # fmt: skip
        for sid in order:
            for parent in nodes[sid].parents:
                nodes[parent].children.append(sid)
        return Plan(nodes, order, self.merge, tuple(dropped), self.merge_tree)

    @property
    def dag(self) -> dict[str, set[str]]:
        return {sid: set(n.parents) for sid, n in self.nodes.items()}

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(sid for sid in self.order if not self.nodes[sid].parents)

    def __repr__(self) -> str:
        lines: list[str] = []

        def walk(sid: str, depth: int, via: str | None) -> None:
            node = self.nodes[sid]
            s = node.spec
            how = f" [{via}]" if via else ""
            lines.append(f"{'  ' * depth}- {sid}: {s.database}.{s.table}{how}")
            for child in node.children:
                c = self.nodes[child]
                if c.link and c.link.parent == sid:
                    edge = f"link {sid}.{c.link.from_column} -> {child}.{c.link.to_column}"
                else:
                    edge = "after " + ", ".join(c.parents) if len(c.parents) > 1 else "after"
                walk(child, depth + 1, edge)

        lines.append("Plan")
        for root in self.roots:
            walk(root, 1, None)
        lines.append(f"  merge: {self.merge.strip() if self.merge else '(single step table)'}")
        if self.dropped:
            lines.append(f"  dropped: {', '.join(self.dropped)}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class CheckedPlan:
    """A federated request checked once, and what the engine runs: the request, its plan
    (the DAG validated and the merge parsed, once), what the safety pipeline was asked and
    its outcome, whose checked steps are exactly what runs (a step missing from them was
    stripped; the engine drops its dependants with it)."""

    query: FederatedQuery
    plan: Plan
    request: CheckRequest
    safety: SafetyOutcome

    @property
    def steps(self) -> dict[str, CheckedStep]:
        """The checked steps by step_id."""
        return {s.step_id: s for s in self.safety.steps if s.step_id is not None}


def build_plan(
    query: FederatedQuery, databases: Collection[str], keep: Collection[str] | None = None
) -> Plan:
    """Validate `query` and plan it. `keep` (step ids the safety pipeline let through):
    steps not in it are dropped together with every step that depends on them."""
    links, merge_tree = validate_query(query, databases)
    specs = {s.step_id: s for s in query.steps}
    order = tuple(
        graphlib.TopologicalSorter({s.step_id: s.depends_on for s in query.steps}).static_order()
    )
    nodes = {
        sid: Node(spec=specs[sid], parents=tuple(specs[sid].depends_on), link=links.get(sid))
        for sid in order
    }
    for sid in order:
        for parent in nodes[sid].parents:
            nodes[parent].children.append(sid)
    plan = Plan(nodes=nodes, order=order, merge=query.merge, merge_tree=merge_tree)
    return plan if keep is None else plan.keep(keep)

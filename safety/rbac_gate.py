"""RBAC_GATE: every table the step touches, with the operation it needs, against the
principal's policy (see safety/policy.py for levels and which entry applies), and every
column it reads against the table's `deny_columns` (a `*` or whole-row reference over a
table with denied columns is refused with a suggestion to list columns).

A body that does not parse is AST_CHECKER's to report; the step's declared table is still
checked for the statement's operation, so nothing passes this stage unchecked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safety.policy import EVERY_TABLE, GRANTS, UNBOUNDED, TableGrant, level_for
from safety.verdicts import Allow, Block, Verdict

if TYPE_CHECKING:
    from safety.context import StepContext
    from safety.types import StageName, TableRef


class RbacGate:
    name: StageName = "RBAC_GATE"

    def check(self, step: StepContext) -> Verdict:
        access = step.access()
        if not access:
            access = [(step.declared(), step.operation)]
        decided: dict[str, None] = {}
        grants: dict[TableRef, TableGrant] = {}
        for ref, op in access:
            grant = grants.get(ref)
            if grant is None:
                grant = grants[ref] = step.grant(ref)
            if not grant.allows(op):
                return _denied(step, ref, grant, op)
            decided[grant.label] = None
        if step.analysis.unbounded:
            targets = step.language.unbounded_targets(step.analysis, access, step.declared())
            for ref, op in targets:
                grant = grants[ref]
                if not grant.allows(UNBOUNDED):
                    return _unbounded(step, ref, grant, op)
        return step.language.column_block(step.analysis, step) or Allow(", ".join(decided))


def _denied(step: StepContext, ref: TableRef, grant: TableGrant, op: str) -> Block:
    where = f"{step.step.database}.{ref.display}"
    if ref.name == EVERY_TABLE and not ref.schema:
        return Block(
            f"Access denied: {op} on {step.step.database} may reach any table (an unlabeled or "
            f"untyped pattern, or a metadata procedure); the policy allows only {grant.level} "
            f"across every table ({grant.entry})",
            "name the table (label, relationship type) of every part of the query",
            grant.label,
        )
    level = level_for({op} | GRANTS[grant.level])
    return Block(
        f"Access denied: {where} requires permission for {op}; policy grants {grant.level}",
        f"add `{ref.display}: {level}` under {grant.tables_path} in sluice.yaml",
        grant.label,
    )


def _unbounded(step: StepContext, ref: TableRef, grant: TableGrant, op: str) -> Block:
    where = f"{step.step.database}.{ref.display}"
    return Block(
        f"Access denied: {where} requires admin permission (A) for {op} without a WHERE "
        f"clause (every row); policy grants {grant.level}",
        f"add a WHERE clause, or set `{ref.display}: RWA` under {grant.tables_path}",
        grant.label,
    )

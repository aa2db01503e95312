"""RBAC_GATE: every table the step touches, with the operation it needs, against the
principal's policy (see safety/policy.py for levels and which entry applies), and every
column it reads against the table's `deny_columns` (a `*` or whole-row reference over a
table with denied columns is refused with a suggestion to list columns).

A body that does not parse is AST_CHECKER's to report; the step's declared table is still
checked for the statement's operation, so nothing passes this stage unchecked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safety.mql import MqlAnalysis
from safety.policy import GRANTS, UNBOUNDED, TableGrant, level_for
from safety.verdicts import Allow, Block, Verdict

if TYPE_CHECKING:
    from safety.context import StepContext
    from safety.sql_access import TableRef
    from safety.types import StageName


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
            target = step.declared() if step.language == "mql" else None
            for ref, op in access:
                if op in ("UPDATE", "DELETE") and (target is None or ref == target):
                    grant = grants[ref]
                    if not grant.allows(UNBOUNDED):
                        return _unbounded(step, ref, grant, op)
        a = step.analysis
        if isinstance(a, MqlAnalysis):
            return _mql_fields(step, a, step.grant(step.declared())) or Allow(", ".join(decided))
        columns = a.columns
        for use in columns:
            grant = grants.get(use.table)
            if grant is None:
                grant = grants[use.table] = step.grant(use.table)
            if not grant.deny_columns:
                continue
            where = f"{step.step.database}.{use.table.display}"
            if use.column == "*":
                return Block(
                    f"Access denied: `*` on {where} would return denied columns "
                    f"({', '.join(sorted(grant.deny_columns))})",
                    "list the columns you need instead of `*`",
                    f"{grant.entry}.deny_columns",
                )
            if use.column in grant.deny_columns:
                return Block(
                    f"Access denied: column {where}.{use.column} is denied "
                    f"({use.use}); policy {grant.entry}.deny_columns",
                    f"remove {use.column} from the query, or remove it from "
                    f"{grant.entry}.deny_columns in sluice.yaml",
                    f"{grant.entry}.deny_columns",
                )
        return Allow(", ".join(decided))


def _denied(step: StepContext, ref: TableRef, grant: TableGrant, op: str) -> Block:
    where = f"{step.step.database}.{ref.display}"
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


def _mql_fields(step: StepContext, a: MqlAnalysis, grant: TableGrant) -> Block | None:
    denied = grant.deny_columns
    if not denied:
        return None
    where = f"{step.step.database}.{step.step.table}"
    for field in a.fields:
        if field.lower() in denied:
            return Block(
                f"Access denied: field {where}.{field} is denied; policy "
                f"{grant.entry}.deny_columns",
                f"remove {field} from the body, or from {grant.entry}.deny_columns",
                f"{grant.entry}.deny_columns",
            )
    hidden = {f.lower() for f in a.excluded}
    if a.returns_all and not denied <= hidden:
        return Block(
            f"Access denied: whole documents of {where} would return denied fields "
            f"({', '.join(sorted(denied))})",
            "list the fields you need in `projection` (or a $project stage), or exclude the "
            "denied ones",
            f"{grant.entry}.deny_columns",
        )
    return None

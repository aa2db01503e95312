"""AST_CHECKER: exactly one statement of a kind sluice runs, allowed for the level of the
step's table; side effects (functions and statements that write, read files, sleep or change
server state) counted as writes or DDL and refused; and what is checked is what runs: the
statement's own table (FROM, or the DML/DDL target) must be the step's `table`, and an MQL
body naming a `collection` must name the step's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safety.mql import MqlAnalysis
from safety.verdicts import Allow, Block, Verdict

if TYPE_CHECKING:
    from safety.context import StepContext
    from safety.types import StageName


class AstChecker:
    name: StageName = "AST_CHECKER"

    def check(self, step: StepContext) -> Verdict:
        a = step.analysis
        if a.error is not None:
            return Block(a.error, a.suggestion, "builtin")
        if a.structural:
            reason, suggestion = a.structural[0]
            return Block(reason, suggestion, "builtin")
        declared = step.declared()
        if isinstance(a, MqlAnalysis):
            if a.collection is not None and a.collection != step.step.table:
                return Block(
                    f"the body names collection {a.collection!r}, but the step's "
                    f"table is {step.step.table!r}",
                    "set the step's table to the collection the body queries, or "
                    "drop `collection` from the body",
                    "builtin",
                )
        else:
            mains = list(a.main_tables)
            if not mains:
                mains = [ref for ref, _ in a.access]
            if mains and not any(step.same_table(declared, m) for m in mains):
                names = ", ".join(dict.fromkeys(m.display for m in mains))
                return Block(
                    f"the query works on {names}, not on the step's table {step.step.table!r}",
                    f"set the step's table to {mains[0].display!r}, or query {step.step.table!r}",
                    "builtin",
                )
        grant = step.grant(declared)
        if not grant.allows(a.operation):
            return Block(
                f"a {a.operation} statement is not allowed on "
                f"{step.step.database}.{step.step.table}; policy grants {grant.level}",
                f"change the statement, or the level under {grant.tables_path}",
                grant.label,
            )
        return Allow(grant.label)

"""AST_CHECKER: exactly one statement of a kind sluice runs, allowed for the level of the
step's table; side effects (functions and statements that write, read files, sleep or change
server state) counted as writes or DDL and refused; and what is checked is what runs: the
statement's own table (FROM, or the DML/DDL target) must be the step's `table`, and an MQL
body naming a `collection` must name the step's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safety.verdicts import INVALID_QUERY, Allow, Block, Verdict

if TYPE_CHECKING:
    from safety.context import StepContext
    from safety.types import StageName


class AstChecker:
    name: StageName = "AST_CHECKER"

    def check(self, step: StepContext) -> Verdict:
        a = step.analysis
        if a.error is not None:
            invalid = INVALID_QUERY if getattr(a, "invalid", False) else None
            return Block(a.error, a.suggestion, "builtin", invalid=invalid)
        if a.structural:
            reason, suggestion = a.structural[0]
            return Block(reason, suggestion, "builtin")
        problem = step.language.target_problem(a, step)
        if problem is not None:
            # a body acting on another table than the declared one stays a refusal (403): the
            # grant checked is the declared table's (the hostile corpora rely on it)
            reason, suggestion = problem
            return Block(reason, suggestion, "builtin")
        declared = step.declared()
        grant = step.grant(declared)
        if not grant.allows(a.operation):
            return Block(
                f"a {a.operation} statement is not allowed on "
                f"{step.step.database}.{step.step.table}; policy grants {grant.level}",
                f"change the statement, or the level under {grant.tables_path}",
                grant.label,
            )
        return Allow(grant.label)

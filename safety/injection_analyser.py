"""INJECTION_ANALYSER: injection patterns found on the AST and tokens, never in raw text.

Blocks: stacked statements, time-based and file/network functions, credential catalogs,
comments that cut a statement off (an unbalanced quote inside), MySQL executable comments,
MQL server-side JavaScript ($where, $function, $accumulator, "function(" strings) and
$out/$merge. Warnings: tautologies under OR (`OR 1=1`; a generated `WHERE 1=1 AND ...` is
not one), UNION branches of NULL columns, catalog reads, SQL-looking trailing comments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safety.verdicts import Allow, Block, Verdict, Warn

if TYPE_CHECKING:
    from safety.context import StepContext
    from safety.types import StageName


class InjectionAnalyser:
    name: StageName = "INJECTION_ANALYSER"

    def check(self, step: StepContext) -> Verdict:
        a = step.analysis
        if a.error is not None:
            return Block(f"cannot analyse {step.label}: {a.error}", a.suggestion, "builtin")
        if a.injection_blocks:
            reason, suggestion = a.injection_blocks[0]
            return Block(reason, suggestion, "builtin")
        if not a.injection_warnings:
            return Allow("builtin")
        prefix = f"{step.label}: " if step.step.step_id else ""
        return Warn(tuple(prefix + w for w in a.injection_warnings), "builtin")

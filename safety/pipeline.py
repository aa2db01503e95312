"""The safety pipeline: every step through the ordered stages, stopping at the first block.

    STAGES = (PromptGuard(), RbacGate(), AstChecker(), InjectionAnalyser(), Guardrails())
    outcome = check(request, config)              # or stages=(AstChecker(),) in a test

Stages run stage by stage over all steps, so `stages_passed` means "passed for every step
that runs". Under `safety.deny_policy: PARTIAL` a federated request whose step is denied by
RBAC_GATE loses that step and every step depending on it (a warning names them) and the rest
runs; under BLOCK, or for a single step, or when nothing would be left, the request is
blocked. Any other stage's block refuses the whole request. Pure CPU, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safety import types as t
from safety.ast_checker import AstChecker
from safety.context import StepContext
from safety.guardrails import Guardrails
from safety.injection_analyser import InjectionAnalyser
from safety.prompt_guard import PromptGuard
from safety.rbac_gate import RbacGate
from safety.verdicts import Allow, Block, Stage, Warn

if TYPE_CHECKING:
    from safety.config import CheckConfig

STAGES: tuple[Stage, ...] = (
    PromptGuard(),
    RbacGate(),
    AstChecker(),
    InjectionAnalyser(),
    Guardrails(),
)


def check(
    request: t.CheckRequest, config: CheckConfig, *, stages: tuple[Stage, ...] = STAGES
) -> t.SafetyOutcome:
    """Run `request` through `stages`; the outcome holds the checked steps or the block."""
    outcome = t.SafetyOutcome()
    live = [StepContext(request, config, step) for step in request.steps]
    federated = len(live) > 1
    for stage in stages:
        denied: list[tuple[StepContext, Block]] = []
        for ctx in live:
            verdict = stage.check(ctx)
            sid = ctx.step.step_id
            match verdict:
                case Allow(policy=policy):
                    outcome.verdicts.append(
                        t.StageVerdict(stage=stage.name, outcome="pass", step_id=sid, policy=policy)
                    )
                case Warn(messages=messages, policy=policy):
                    outcome.warnings.extend(messages)
                    outcome.verdicts.append(
                        t.StageVerdict(
                            stage=stage.name,
                            outcome="warn",
                            step_id=sid,
                            reason="; ".join(messages),
                            policy=policy,
                        )
                    )
                case Block(reason=reason, suggestion=suggestion, policy=policy, invalid=invalid):
                    outcome.verdicts.append(
                        t.StageVerdict(
                            stage=stage.name,
                            outcome="block",
                            step_id=sid,
                            reason=reason,
                            policy=policy,
                        )
                    )
                    block = Block(reason, suggestion, policy, invalid=invalid)
                    if (
                        federated
                        and stage.name == "RBAC_GATE"
                        and config.safety.deny_policy == "PARTIAL"
                    ):
                        denied.append((ctx, block))
                        continue
                    outcome.block = _block(stage.name, ctx, block)
                    return outcome
        if denied:
            live = _strip(live, denied, outcome)
            if not live:
                ctx, block = denied[0]
                outcome.block = _block(stage.name, ctx, block)
                return outcome
        outcome.stages_passed.append(stage.name)
    outcome.steps = [_checked(ctx) for ctx in live]
    return outcome


def _block(stage: t.StageName, ctx: StepContext, block: Block) -> t.RequestBlock:
    reason = block.reason
    if ctx.step.step_id and len(ctx.request.steps) > 1:
        reason = f"step {ctx.step.step_id}: {reason}"
    return t.RequestBlock(
        stage=stage,
        reason=reason,
        suggestion=block.suggestion,
        step_id=ctx.step.step_id,
        invalid=block.invalid,
    )


def _strip(
    live: list[StepContext], denied: list[tuple[StepContext, Block]], outcome: t.SafetyOutcome
) -> list[StepContext]:
    """Drop the denied steps and, transitively, every step that depends on one; a warning
    per denied step names the steps that went with it."""
    denied_ids = {ctx.step.step_id for ctx, _ in denied}
    gone: set[str | None] = set(denied_ids)
    for ctx, block in denied:
        with_it: list[str] = []
        reach = {ctx.step.step_id}
        changed = True
        while changed:
            changed = False
            for c in live:
                sid = c.step.step_id
                if sid not in reach and any(d in reach for d in c.step.depends_on):
                    reach.add(sid)
                    changed = True
                    if sid not in denied_ids:
                        with_it.append(str(sid))
        gone |= reach
        tail = f"; also stripped, as they depend on it: {', '.join(with_it)}" if with_it else ""
        outcome.warnings.append(
            f"step {ctx.step.step_id} stripped (deny_policy PARTIAL): {block.reason}{tail}"
        )
    outcome.stripped.extend(str(c.step.step_id) for c in live if c.step.step_id in gone)
    return [c for c in live if c.step.step_id not in gone]


def _checked(ctx: StepContext) -> t.CheckedStep:
    s = ctx.step
    operation = ctx.operation
    return t.CheckedStep(
        spec=s,
        language=ctx.language.name,
        dialect=ctx.dialect,
        operation=operation,
        rewrite=ctx.rewrite or t.Rewrite(text=s.query, row_cap=None),
        timeout=ctx.timeout,
        readonly=operation == "SELECT",
        tables=list(dict.fromkeys(ref.display for ref, _ in ctx.access())) or [s.table],
    )

"""The safety pipeline in front of every database: `safety.pipeline.check(request, config)`
returns the checked, rewritten steps or the block (stages: PROMPT_GUARD, RBAC_GATE,
AST_CHECKER, INJECTION_ANALYSER, GUARDRAILS). `safety.audit.AuditLog` writes the audit trail.
"""

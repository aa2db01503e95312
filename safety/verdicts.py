"""What a stage returns: a tagged verdict, handled with `match` in the pipeline.

`policy` names the configuration entry (or the built-in rule) that decided, for the audit log:
"permissions.default.demo.tables.users=R", "safety.max_rows_per_query=1000", "builtin".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from safety.context import StepContext
    from safety.types import StageName


class Allow(msgspec.Struct, tag=True, frozen=True):
    policy: str | None = None


class Warn(msgspec.Struct, tag=True, frozen=True):
    """Passes, with human-readable warnings that reach the client in `safety.warnings`."""

    messages: tuple[str, ...]
    policy: str | None = None


class Block(msgspec.Struct, tag=True, frozen=True):
    """Refuses the step: `reason` says what was found, `suggestion` what to do instead."""

    reason: str
    suggestion: str | None = None
    policy: str | None = None
    invalid: bool = False  # not a refusal: the text is not a query (a 400, not a 403)


Verdict = Allow | Warn | Block


class Stage(Protocol):
    """One ordered check over one step. Stages never execute anything and never mutate the
    cached parse; GUARDRAILS alone writes the rewritten text into the context."""

    name: StageName

    def check(self, step: StepContext) -> Verdict: ...

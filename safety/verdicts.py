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


INVALID_QUERY = "invalid_query"
INVALID_REQUEST = "invalid_request"


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
    # not a refusal but a malformed request, answered 400 with this error code (not 403):
    # INVALID_QUERY (the text is not a query), INVALID_REQUEST (a language the database
    # does not speak)
    invalid: str | None = None


Verdict = Allow | Warn | Block


class Stage(Protocol):
    """One ordered check over one step. Stages never execute anything and never mutate the
    cached parse; GUARDRAILS alone writes the rewritten text into the context."""

    name: StageName

    def check(self, step: StepContext) -> Verdict: ...

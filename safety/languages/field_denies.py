"""`deny_columns` for document languages, whose bodies name fields rather than columns: a
named field that is denied, or whole documents (no projection) of a table with denied
fields, is refused. One rule for every such language (the fields come from its analysis)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from safety.verdicts import Block

if TYPE_CHECKING:
    from safety.languages.base import StepView
    from safety.types import TableRef


def field_block(
    step: StepView,
    ref: TableRef,
    fields: Iterable[str],
    *,
    returns_all: bool,
    projection_hint: str,
    excluded: Iterable[str] = (),
) -> Block | None:
    """A block when a denied field is named or would come back, else None."""
    grant = step.grant(ref)
    denied = grant.deny_columns
    if not denied:
        return None
    where = f"{step.database}.{ref.display}"
    policy = f"{grant.entry}.deny_columns"
    for field in fields:
        if field.lower() in denied:
            return Block(
                f"Access denied: field {where}.{field} is denied; policy {policy}",
                f"remove {field} from the body, or from {policy}",
                policy,
            )
    hidden = {f.lower() for f in excluded}
    if returns_all and not denied <= hidden:
        return Block(
            f"Access denied: whole documents of {where} would return denied fields "
            f"({', '.join(sorted(denied))})",
            projection_hint,
            policy,
        )
    return None

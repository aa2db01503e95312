"""CheckedStep (what the safety pipeline approved) -> Statement (what a connector runs).

The one place that turns a verdict into executable form, so the simple path and the
federated engine can never run something other than what was checked.
"""

from __future__ import annotations

from connectors.base import Statement
from safety.types import CheckedStep

DEFAULT_BATCH_ROWS = 10_000


def to_statement(
    step: CheckedStep,
    *,
    bulk: bool = False,
    linked: bool = False,
    batch_size: int = DEFAULT_BATCH_ROWS,
) -> Statement:
    """The connector statement for a checked step; `row_cap + 1` rows so truncation shows.

    `linked`: the statement a link filter will be applied to, i.e. the checked text before
    the row cap, so the cap counts rows that passed the filter (max_rows still enforces it).
    """
    text: str = step.text
    params: tuple[object, ...] = ()
    if linked and step.link_text is not None:
        text = step.link_text
    elif step.run_text is not None and not bulk:
        text, params = step.run_text, step.params
    return Statement(
        text=text,
        params=params,
        timeout=step.timeout,
        readonly=step.readonly,
        max_rows=None if step.row_cap is None else step.row_cap + 1,
        batch_size=batch_size,
        bulk=bulk,
        options={"collection": step.table},
        inline=step.text if params else None,
    )

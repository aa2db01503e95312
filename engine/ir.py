"""The federated request as the client sends it: steps forming a DAG, plus an optional merge.

Decoded straight from HTTP bodies (and DAG files) with the module-level `DECODER`; unknown
fields are rejected so a typo (`depend_on`) fails with msgspec's `$.path` instead of being
silently ignored.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from safety.types import Step


# The user's step (safety.types.Step: database, table, query, language, depends_on, what the
# pipeline checks, as sent) with its id required and the link fields of a DAG.
class StepSpec(Step, forbid_unknown_fields=True, kw_only=True):
    """One step: a native query on one database, optionally fed by a parent's link values.

    `link_from` names the parent's column (qualified `s0.col` when the step has several
    parents); `link_to` names this step's column that must equal one of those values.
    """

    step_id: str
    link_from: str | None = None
    link_to: str | None = None


class FederatedQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A DAG of steps; `merge` is DuckDB SQL over the step tables (named by step_id)."""

    steps: list[StepSpec]
    merge: str | None = None
    dry_run: bool = False
    # rows per step: lowers the inline cap (safety.max_rows_per_query); an export or a run
    # may raise it up to its own bound (safety.max_export_rows)
    max_rows: int | None = msgspec.field(default=None)
    # an export or a run whose step hit its cap fails unless this is set
    allow_truncation: bool = False
    # sluice-only: where the merge runs. "spark" hands it to engine.spark (400 when not
    # configured); "duckdb" keeps it local; unset, it goes to Spark past engine.spark.min_rows
    engine: Literal["duckdb", "spark"] | None = None


DECODER = msgspec.json.Decoder(FederatedQuery)


def decode(body: bytes | str) -> FederatedQuery:
    """Decode a JSON body; raises msgspec.ValidationError / DecodeError naming the path."""
    return DECODER.decode(body)

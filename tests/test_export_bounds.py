"""The export row bound is per principal (auth.tokens[].max_export_rows) and a caller may
lower or raise its max_rows within it; inline requests keep safety.max_rows_per_query."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from api.envelopes import QuerySuccess
from api.local import open_service
from engine.config import load_config_text
from engine.errors import InvalidRequest, ResultTruncated
from engine.ir import FederatedQuery, StepSpec


def _config(tmp_path: Path) -> str:
    db = tmp_path / "t.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (i INTEGER)")
    con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(300)])
    con.commit()
    con.close()
    return (
        f"databases:\n  - name: lite\n    type: sqlite\n    path: {db}\n"
        "permissions:\n  default:\n    lite: {level: R}\n"
        "  principals:\n    alice:\n      lite: {level: R}\n    bob:\n      lite: {level: R}\n"
        "auth:\n  tokens:\n"
        "    - {principal: alice, token: a-token-of-alice, max_export_rows: 150}\n"
        "    - {principal: bob, token: a-token-of-bob}\n"
        "safety:\n  max_rows_per_query: 50\n  max_export_rows: 1000\n"
        f"server:\n  data_dir: {tmp_path / 'state'}\n"
    )


QUERY = FederatedQuery(
    steps=[StepSpec(step_id="s", database="lite", table="t", query="SELECT i FROM t")]
)


@pytest.mark.parametrize(("principal", "bound"), [("alice", 150), ("bob", 1000)])
async def test_export_bound_per_principal(tmp_path: Path, principal: str, bound: int) -> None:
    config = load_config_text(_config(tmp_path))
    assert config.export_rows_for(principal) == bound
    async with open_service(config, principal=principal) as s:
        inline = await s.federated(QUERY)
        assert isinstance(inline, QuerySuccess)
        assert inline.data.row_count == 50 and inline.metadata.steps[0].status == "truncated"
        if bound < 300:
            with pytest.raises(ResultTruncated) as info:
                await s.federated(QUERY, export=True)
            assert info.value.details == {"steps": ["s"], "max_rows": 150, "bound": 150}
        else:
            whole = await s.federated(QUERY, export=True)
            assert isinstance(whole, QuerySuccess) and whole.data.row_count == 300
        lowered = msgspec.structs.replace(QUERY, max_rows=20, allow_truncation=True)
        cut = await s.federated(lowered, export=True)
        assert isinstance(cut, QuerySuccess) and cut.data.row_count == 20
        with pytest.raises(InvalidRequest, match=f"from 1 to {bound:,}"):
            await s.federated(msgspec.structs.replace(QUERY, max_rows=bound + 1), export=True)
        # inline: max_rows may lower the cap, never raise it past max_rows_per_query
        with pytest.raises(InvalidRequest, match="from 1 to 50"):
            await s.federated(msgspec.structs.replace(QUERY, max_rows=51))
        low = await s.federated(msgspec.structs.replace(QUERY, max_rows=10))
        assert isinstance(low, QuerySuccess) and low.data.row_count == 10

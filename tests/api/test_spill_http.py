"""Spilling through a real `sluice serve`: every step past `limits.spill_after_bytes` (1 byte
here) goes to Parquet, the answer is the in-memory server's, `metadata.memory` and /metrics
report it, the spill bound is a 507 naming its setting, and no file is left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import (
    Server,
    config_text,
    free_port,
    make_files,
    start_server,
    stop_server,
)
from tests.api.test_federated import LINKED, post
from tests.helpers import assert_error_envelope
from tests.servers import MySQLServer, PgServer

SPILLING = """limits:
  memory_budget: 512MB
  spill_after_bytes: 1
  merge_temp_limit: 128KB
"""
# 100 rows (the server's row cap) of ~1.4 KB: past the 96 KB the Parquet files may use
WIDE = {
    "steps": [
        {
            "step_id": "w",
            "database": "pg",
            "table": "items",
            "query": "SELECT id, repeat(name, 200) AS wide FROM items",
        }
    ],
    "merge": "SELECT count(*) AS n FROM w",
}


@pytest.fixture(scope="module")
def spilling(
    seeded: tuple[PgServer, MySQLServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    pg, my = seeded
    folder = tmp_path_factory.mktemp("spilling")
    lite, duck = make_files(folder / "files")
    srv = start_server(
        config_text(pg, my, lite, duck, dead_port=free_port(), extra=SPILLING), folder
    )
    try:
        yield srv
    finally:
        stop_server(srv)


def spill_files(server: Server) -> list[Path]:
    root = server.data_dir / "spill" / str(server.process.pid)
    assert root.is_dir(), "the server's spill folder exists while it runs"
    return [p for p in root.rglob("*") if p.is_file()]


def metric(text: str, name: str) -> float:
    lines = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    assert lines, f"{name} is not exported"
    return float(lines[0].split()[1])


def test_a_spilled_join_answers_as_in_memory(server: Server, spilling: Server) -> None:
    want = post(server, LINKED)
    got = post(spilling, LINKED)
    assert want.status_code == got.status_code == 200, got.text
    w, g = want.json(), got.json()
    assert g["data"] == w["data"] and g["data"]["row_count"] > 0
    memory = g["metadata"]["memory"]
    assert sorted(memory["spilled_steps"]) == ["i", "o"] and memory["spilled_bytes"] > 0
    assert 0 < memory["merge_memory_limit_bytes"] < 512 * 10**6
    assert memory["peak_rss_bytes"] > 0
    assert "spilled_steps" not in w["metadata"]["memory"]  # nothing spilled by default
    assert w["metadata"]["memory"]["peak_rss_bytes"] > 0
    # paged from the store like any other result
    with spilling.client() as c:
        page = c.get(g["metadata"]["result_pages"]["path"], params={"size": 100}).json()
    assert page["rows"][: len(w["data"]["rows"])] == w["data"]["rows"]
    assert len(page["rows"]) == w["data"]["row_count"]
    with spilling.client() as c:
        scraped = c.get("/metrics").text
    assert metric(scraped, "sluice_federated_peak_rss_bytes_count") >= 1
    assert metric(scraped, "sluice_spilled_steps_total") >= 2
    assert metric(scraped, "sluice_spilled_bytes_total") >= memory["spilled_bytes"]
    assert spill_files(spilling) == []


def test_the_spill_bound_is_a_507_naming_the_setting(spilling: Server) -> None:
    body: dict[str, Any] = assert_error_envelope(post(spilling, WIDE), 507, "spill_limit_exceeded")
    err = body["error"]
    assert "limits.merge_temp_limit" in err["message"] and "'w'" in err["message"]
    assert err["details"] == {"setting": "limits.merge_temp_limit", "limit_bytes": 128_000}
    assert "merge_temp_limit" in err["suggestion"]
    assert spill_files(spilling) == []
    # the server keeps answering, and the bound was per request, not a leak
    again = post(spilling, LINKED)
    assert again.status_code == 200, again.text
    assert spill_files(spilling) == []

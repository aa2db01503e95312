"""No path loses an audit entry: the CLI (a process per query, the session closed right after
it) and the in-process API both drain the writer's queue on shutdown."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from api import metrics
from api.local import open_service
from api.service import SafetyBlocked
from engine.config import load_config


def _config(tmp_path: Path) -> Path:
    db = tmp_path / "t.sqlite"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
    con.commit()
    con.close()
    path = tmp_path / "sluice.yaml"
    path.write_text(
        f"databases:\n  - name: lite\n    type: sqlite\n    path: {db}\n"
        "permissions:\n  default:\n    lite:\n      level: R\n"
        f"server:\n  data_dir: {tmp_path / 'state'}\n"
    )
    return path


def _entries(tmp_path: Path) -> list[dict]:
    log = tmp_path / "state" / "audit.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_every_cli_query_is_audited(tmp_path: Path) -> None:
    _config(tmp_path)
    queries = ["SELECT id FROM t", "DELETE FROM t WHERE id = 1"] * 10  # 10 blocked DELETEs
    procs = []
    for i in range(0, len(queries), 4):  # 4 at a time: 2 cores, and appends must interleave
        batch = [
            subprocess.Popen(
                [sys.executable, "-m", "sluice.cli", "query", "-d", "lite", "-t", "t", q],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for q in queries[i : i + 4]
        ]
        procs += [(p, p.communicate(timeout=60)[1]) for p in batch]
    assert sorted(p.returncode for p, _ in procs) == [0] * 10 + [2] * 10, procs
    entries = _entries(tmp_path)
    assert len(entries) == 20, entries
    assert sum(e["blocked"] is not None for e in entries) == 10
    assert not [e for e in entries if e.get("event")]  # no drop notices


async def test_in_process_api_drains_on_exit(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    before = metrics.METRICS.audit_dropped._value.get()
    async with open_service(config) as session:
        for i in range(300):
            if i % 3:
                await session.rows("lite", "t", "SELECT id FROM t")
            else:
                try:
                    await session.simple("lite", "t", "DELETE FROM t")
                except SafetyBlocked:
                    pass
    # the session closed right after the last query: every entry is on disk
    entries = _entries(tmp_path)
    assert len(entries) == 300
    assert sum(e["blocked"] is not None for e in entries) == 100
    assert metrics.METRICS.audit_dropped._value.get() == before


def test_a_drop_counts_in_the_metric(tmp_path: Path) -> None:
    from engine.runtime import Runtime

    config = load_config(_config(tmp_path))
    audit = Runtime(config, on_audit_drop=metrics.audit_dropped).audit  # as the app wires it
    audit.close()
    before = metrics.METRICS.audit_dropped._value.get()
    audit.record({"request_id": "late"})
    assert metrics.METRICS.audit_dropped._value.get() == before + 1
    assert b"sluice_audit_entries_dropped_total" in metrics.METRICS.render()

"""/metrics under `sluice serve --workers 2`: every scrape adds up all workers (whichever
answers it), plus the per-database query histogram, process metrics, build info and the
dropped-audit counter."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import start_server, stop_server


def samples(url: str) -> dict[str, list]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def total(found: dict[str, list], name: str, **labels: str) -> float:
    return sum(
        s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_two_workers_one_view(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1), (2);")
    con.commit()
    con.close()
    config = (
        f"databases:\n  - name: lite\n    type: sqlite\n    path: {db}\n"
        "permissions:\n  default:\n    lite: {level: R}\n"
        f"server:\n  data_dir: {tmp_path / 'state'}\n"
    )
    server = start_server(config, tmp_path / "srv", extra_args=["--workers", "2"])
    try:
        before = total(samples(server.url), "sluice_http_requests_total", route="/v1/health")
        for _ in range(16):  # a new connection each: the kernel spreads them over the workers
            assert httpx.get(f"{server.url}/v1/health", timeout=30).status_code == 200
        body = {"database": "lite", "table": "t", "query": "SELECT id FROM t"}
        for _ in range(6):
            r = httpx.post(f"{server.url}/v1/query/simple", json=body, timeout=30)
            assert r.status_code == 200, r.text
        pids: set[str] = set()
        for _ in range(8):  # whichever worker answers, it reports both
            found = samples(server.url)
            health = total(found, "sluice_http_requests_total", route="/v1/health")
            assert health - before == 16
            assert total(found, "sluice_query_duration_seconds_count", database="lite") == 6
            assert total(found, "sluice_queries_total", database="lite", outcome="ok") == 6
            assert total(found, "sluice_audit_entries_dropped_total") == 0
            build = found["sluice_build_info"]
            assert {s.labels["version"] for s in build} == {"0.1.0"}
            pids |= {s.labels["pid"] for s in found["process_resident_memory_bytes"]}
            assert all(s.value > 10_000_000 for s in found["process_resident_memory_bytes"])
            assert all(s.value > 0 for s in found["process_open_fds"])
            assert "process_cpu_seconds_total" in found
        assert len(pids) >= 2  # both workers report their process figures
    finally:
        stop_server(server)
    assert not list(Path("/tmp").glob(f"sluice-metrics-*{server.process.pid}*"))

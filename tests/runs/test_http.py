"""The run control plane over real HTTP against a real server process (hypercorn) whose runs
execute through QueryService.federated on the session PostgreSQL database."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from api.client import ApiFailure, Client, Event
from sluice.cli_runs import add_run_commands
from tests.api.conftest import Server, free_port, start_server, stop_server
from tests.helpers import assert_error_envelope
from tests.servers import PgServer

SPIN_ROWS = 40_000  # spin x spin is 1.6e9 rows: a query that runs until cancelled
SETUP = [
    "DROP TABLE IF EXISTS run_items, spin",
    "CREATE TABLE run_items (id int PRIMARY KEY, kind int NOT NULL, label text NOT NULL)",
    "INSERT INTO run_items SELECT g, g % 3, 'item ' || g FROM generate_series(1, 250) g",
    "CREATE TABLE spin (n int)",
    f"INSERT INTO spin SELECT g FROM generate_series(1, {SPIN_ROWS}) g",
    "ANALYZE",
]
SLOW = "SELECT count(*) AS n FROM spin a CROSS JOIN spin b"

DAG_YAML = """\
steps:
  - step_id: items
    database: pg
    table: run_items
    query: SELECT id, kind, label FROM run_items
  - step_id: kinds
    database: pg
    table: run_items
    query: SELECT DISTINCT kind FROM run_items
merge: SELECT i.id, i.kind, i.label FROM items i JOIN kinds k ON k.kind = i.kind ORDER BY i.id
"""


def slow_dag(tag: str) -> str:
    # a distinct comment keeps each payload (and the pg_stat_activity text) apart
    return json.dumps(
        {
            "steps": [
                {
                    "step_id": "spin",
                    "database": "pg",
                    "table": "spin",
                    "query": f"{SLOW} WHERE a.n > -{zlib.crc32(tag.encode()) % 100_000}",
                }
            ]
        }
    )


class RunServer(Server):
    """A real `sluice serve` (tests/api/conftest.py) with the run clients at hand."""

    def client(self) -> Client:  # type: ignore[override]
        return Client(self.url, timeout=30)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def config_text(pg: PgServer, data_dir: Path, server: dict[str, object]) -> str:
    settings = "".join(f"  {k}: {v}\n" for k, v in server.items())
    return f"""\
databases:
  - name: pg
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 4
  - name: gone
    type: postgresql
    host: 127.0.0.1
    port: {free_port()}
    database: x
    user: postgres
    connect_timeout_seconds: 1
permissions:
  default:
    pg:
      level: R
    gone:
      level: R
safety:
  max_rows_per_query: 100000
  inline_rows: 50
  query_timeout_seconds: 60
server:
  data_dir: {data_dir}
{settings}"""


# small limits so the queue, the 429 and the drain are reached quickly
RUN_LIMITS: dict[str, object] = {
    "max_concurrent_runs": 2,
    "max_queued_runs": 3,
    "run_grace_seconds": 3,
}


def start(pg: PgServer, folder: Path, **server: object) -> RunServer:
    """A server whose config's `server` section has RUN_LIMITS updated with `server`."""
    srv = start_server(config_text(pg, folder / "state", {**RUN_LIMITS, **server}), folder)
    deadline = time.monotonic() + 20  # ready once the database is reachable
    while httpx.get(f"{srv.url}/readyz").status_code != 200:
        if time.monotonic() >= deadline:
            stop_server(srv)
            raise AssertionError(srv.log())
        time.sleep(0.1)
    return RunServer(**{f.name: getattr(srv, f.name) for f in fields(Server)})


def stop(server: RunServer) -> None:
    if server.process.poll() is None:
        stop_server(server)


@pytest.fixture(scope="module")
def seeded_pg(pg_server: PgServer) -> PgServer:
    pg_server.run(*SETUP)
    return pg_server


@pytest.fixture(scope="module")
def server(seeded_pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunServer]:
    srv = start(seeded_pg, tmp_path_factory.mktemp("runs"))
    try:
        yield srv
    finally:
        stop(srv)


def wait_for(client: Client, run_id: str, *statuses: str, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        record = client.run(run_id)
        if record["status"] in statuses:
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.05)


def slow_queries(pg: PgServer, marker: str) -> int:
    rows = pg.run(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'active' "
        f"AND query LIKE '%CROSS JOIN spin%WHERE a.n > -{marker} %' "
        "AND pid <> pg_backend_pid()"
    )
    return int(rows[0]["n"])


def marker(tag: str) -> str:
    return str(zlib.crc32(tag.encode()) % 100_000)


def cancel_all(client: Client) -> None:
    for r in client.runs(status="queued,running", limit=500)["runs"]:
        client.cancel(r["run_id"])


# -- lifecycle ---------------------------------------------------------------------------------
def test_lifecycle_result_and_logs(server: RunServer, tmp_path: Path) -> None:
    with server.client() as c:
        accepted = c.submit_run(DAG_YAML, name="nightly", labels={"who": "test"})
        assert set(accepted) == {"run_id", "status", "submitted_at"}
        assert accepted["status"] == "queued" and accepted["submitted_at"].endswith("Z")
        run_id = accepted["run_id"]
        events = list(c.logs(run_id))
        assert events[-1].event == "end" and events[-1].data["status"] == "completed"
        assert all(e.id is not None for e in events if e.event == "log")
        ids = [e.id for e in events if e.event == "log"]
        assert ids == sorted(ids) and ids[0] == 1
        messages = [e.data["message"] for e in events if e.event == "log"]
        assert any(m.startswith("memory: peak RSS ") for m in messages), messages
        record = c.run(run_id)
        assert record["status"] == "completed", record
        assert record["records_written"] == 250
        assert record["name"] == "nightly" and record["labels"] == {"who": "test"}
        assert {s["step_id"]: (s["state"], s["rows"]) for s in record["steps"]} == {
            "items": ("completed", 250),
            "kinds": ("completed", 3),
        }
        assert record["elapsed_secs"] is not None and record["elapsed_secs"] >= 0
        assert record["error"] is None and record["result"] == f"/v1/results/{run_id}"
        # the whole result: paged, and downloadable in three formats
        rows = list(c.result_rows(run_id, size=100))
        assert [r["id"] for r in rows] == list(range(1, 251))
        out = c.download_result(run_id, tmp_path / "out.parquet")
        table = pq.read_table(out)
        assert table.num_rows == 250 and table.column_names == ["id", "kind", "label"]
        csv_path = c.download_result(run_id, tmp_path / "out.csv")
        lines = csv_path.read_text().splitlines()
        assert lines[0] == '"id","kind","label"' and len(lines) == 251
        nd = c.download_result(run_id, tmp_path / "out.ndjson")
        first = json.loads(nd.read_text().splitlines()[0])
        assert first == {"id": 1, "kind": 1, "label": "item 1"}
        # DELETE frees the run and its stored result
        c.delete(run_id)
        with pytest.raises(ApiFailure) as info:
            c.run(run_id)
        assert info.value.status == 404
        with server.http() as h:
            assert_error_envelope(h.get(f"/v1/results/{run_id}"), 404)


def test_submit_errors(server: RunServer) -> None:
    with server.http() as h:
        r = h.post("/v1/runs", json={"config": DAG_YAML, "colour": 1, "shape": 2})
        body = assert_error_envelope(r, 400, "unknown_fields")
        assert body["error"]["details"]["unknown"] == ["colour", "shape"]
        r = h.post(
            "/v1/runs",
            json={
                "config": "steps:\n  - step_id: a\n   bad: [",
            },
        )
        body = assert_error_envelope(r, 400, "config_parse_error")
        assert body["error"]["details"]["line"] == 3
        r = h.post("/v1/runs", json={"config": '{"steps": [}', "config_format": "json"})
        body = assert_error_envelope(r, 400, "config_parse_error")
        assert body["error"]["details"]["line"] == 1
        r = h.post("/v1/runs", json={"config": "steps: 3"})
        message = assert_error_envelope(r, 422, "invalid_config")["error"]["message"]
        assert "line 1: steps: Expected `array`, got `int`" in message
        bad_db = DAG_YAML.replace("database: pg", "database: nope", 1)
        assert_error_envelope(h.post("/v1/runs", json={"config": bad_db}), 422)
        write = (
            "steps:\n  - {step_id: w, database: pg, table: run_items, "
            "query: DELETE FROM run_items}\n"
        )
        body = assert_error_envelope(h.post("/v1/runs", json={"config": write}), 422, "blocked")
        assert body["error"]["details"]["stage"]
        wrong = DAG_YAML.replace("database: pg", "database: pg\n    language: mql", 1)
        body = assert_error_envelope(h.post("/v1/runs", json={"config": wrong}), 422)
        assert body["error"]["code"] == "invalid_request", body
        assert "does not match database 'pg'" in body["error"]["message"]
        assert_error_envelope(
            h.post("/v1/runs", content=b"{nope", headers={"Content-Type": "application/json"}),
            400,
            "invalid_body",
        )
        assert_error_envelope(h.get("/v1/runs/0123"), 404, "run_not_found")
        assert_error_envelope(h.delete("/v1/runs/0123"), 404)
        assert_error_envelope(h.get("/v1/runs", params={"limit": 501}), 400)
        assert_error_envelope(h.get("/v1/runs", params={"status": "done"}), 400)
        assert_error_envelope(h.get("/v1/runs", params={"cursor": "%%%"}), 400)


def test_doctor_first(server: RunServer) -> None:
    with server.client() as c:
        run = c.submit_run(DAG_YAML, doctor_first=True, name="doctored")
        record = wait_for(c, run["run_id"], "completed", "failed")
        (probe,) = record["doctor_report"]
        assert probe["database"] == "pg" and probe["ok"] is True and probe["error"] is None
    two = DAG_YAML.replace("database: pg", "database: gone", 1)
    with server.http() as h:
        r = h.post("/v1/runs", json={"config": two, "doctor_first": True})
    body = assert_error_envelope(r, 422, "doctor_failed")
    report = {p["database"]: p for p in body["error"]["details"]["report"]}
    assert report["pg"]["ok"] is True
    assert report["gone"]["ok"] is False and report["gone"]["error"]


def test_cancel_running_stops_postgres(server: RunServer, seeded_pg: PgServer) -> None:
    with server.client() as c:
        try:
            run = c.submit_run(slow_dag("cancel-running"), config_format="json")
            live = wait_for(c, run["run_id"], "running")
            assert live["finished_at"] is None and live["elapsed_secs"] is not None
            deadline = time.monotonic() + 15
            while slow_queries(seeded_pg, marker("cancel-running")) == 0:
                assert time.monotonic() < deadline, "the slow query never reached PostgreSQL"
                time.sleep(0.05)
            with server.http() as h:
                r = h.post(f"/v1/runs/{run['run_id']}/cancel")
            assert r.status_code == 202
            record = wait_for(c, run["run_id"], "cancelled", "failed", "completed", within=10)
            assert record["status"] == "cancelled", record
            assert record["error"]["reason"] == "cancelled"
            deadline = time.monotonic() + 5
            while slow_queries(seeded_pg, marker("cancel-running")):
                assert time.monotonic() < deadline, "the native query kept running"
                time.sleep(0.05)
            with server.http() as h:  # terminal: 200, and DELETE works
                assert h.post(f"/v1/runs/{run['run_id']}/cancel").status_code == 200
                assert h.delete(f"/v1/runs/{run['run_id']}").status_code == 204
        finally:
            cancel_all(c)


def test_queue_429_cancel_queued_and_idempotency(server: RunServer) -> None:
    """Two slots and three queue places: the sixth distinct submit is a 429; an idempotent
    replay of a queued run is still answered; a queued run cancels at once."""
    with server.client() as c, server.http() as h:
        try:
            running = [c.submit_run(slow_dag(f"busy{i}"), config_format="json") for i in range(2)]
            for r in running:
                wait_for(c, r["run_id"], "running")
            queued = [
                c.submit_run(slow_dag(f"wait{i}"), config_format="json", idempotency_key=f"wait{i}")
                for i in range(3)
            ]
            assert all(q["status"] == "queued" for q in queued)
            r = h.post(
                "/v1/runs", json={"config": slow_dag("one-too-many"), "config_format": "json"}
            )
            body = assert_error_envelope(r, 429, "queue_full")
            assert int(r.headers["retry-after"]) >= 1
            assert body["error"]["details"] == {"queued": 3, "max_queued_runs": 3}
            # replay: same key, same payload -> the original run, never a 429
            again = c.submit_run(slow_dag("wait0"), config_format="json", idempotency_key="wait0")
            assert again["run_id"] == queued[0]["run_id"]
            # same key, another payload -> 409
            r = h.post(
                "/v1/runs",
                json={
                    "config": slow_dag("other"),
                    "config_format": "json",
                    "idempotency_key": "wait0",
                },
            )
            body = assert_error_envelope(r, 409, "idempotency_conflict")
            assert body["error"]["details"]["run_id"] == queued[0]["run_id"]
            # DELETE of a live run is a 409
            assert_error_envelope(h.delete(f"/v1/runs/{queued[1]['run_id']}"), 409)
            # a queued run is cancelled at once
            r = h.post(f"/v1/runs/{queued[1]['run_id']}/cancel")
            assert r.status_code == 202 and r.json()["status"] == "cancelled"
            assert r.json()["started_at"] is None
        finally:
            cancel_all(c)


def test_concurrent_submits_with_one_key_create_one_run(server: RunServer) -> None:
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(6)

    def submit() -> None:
        with server.client() as c:
            barrier.wait()
            results.append(c.submit_run(DAG_YAML, idempotency_key="same-key-concurrent"))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    assert len({r["run_id"] for r in results}) == 1
    with server.client() as c:
        listed = [
            r for r in c.iter_runs(limit=500) if r["idempotency_key"] == "same-key-concurrent"
        ]
    assert len(listed) == 1


def test_list_filters_and_cursor(server: RunServer) -> None:
    with server.client() as c:
        ids = []
        for _ in range(5):  # one at a time: the queue holds 3
            ids.append(c.submit_run(DAG_YAML, name="paged")["run_id"])
            wait_for(c, ids[-1], "completed")
        seen: list[str] = []
        cursor = None
        while True:
            page = c.runs(name="paged", limit=2, cursor=cursor)
            assert len(page["runs"]) <= 2
            seen += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(ids, reverse=True)  # newest first, ids sort by time
        assert c.runs(name="paged", status="failed")["runs"] == []
        future = c.runs(name="paged", since="2999-01-01T00:00:00Z")
        assert future == {"runs": [], "next_cursor": None}
        assert len(c.runs(name="paged", until="2999-01-01T00:00:00Z")["runs"]) == 5


def test_sse_early_reader_replay_resume_and_end(server: RunServer) -> None:
    with server.client() as c:
        blockers = [c.submit_run(slow_dag(f"sse-block{i}"), config_format="json") for i in range(2)]
        try:
            for b in blockers:
                wait_for(c, b["run_id"], "running")
            run_id = c.submit_run(DAG_YAML, name="sse")["run_id"]
            # connected while queued: waits for lines, gets no early `end`
            collected: list[Event] = []

            def read() -> None:
                collected.extend(c2.logs(run_id))

            with server.client() as c2:
                reader = threading.Thread(target=read)
                reader.start()
                time.sleep(0.5)
                assert c.run(run_id)["status"] == "queued"
                assert [e.event for e in collected] == ["log"]  # "run queued"
                for b in blockers:
                    c.cancel(b["run_id"])
                reader.join(timeout=30)
            assert not reader.is_alive()
        finally:
            cancel_all(c)
        assert collected[-1].event == "end" and collected[-1].data == {"status": "completed"}
        logs = [e for e in collected if e.event == "log"]
        assert [e.data["message"] for e in logs][0] == "run queued (sse)"
        assert any(e.data["message"].startswith("step items: completed") for e in logs)
        # resume: only the lines after Last-Event-ID, then end
        resumed = list(c.logs(run_id, last_event_id=logs[2].id))
        assert [e.id for e in resumed if e.event == "log"] == [e.id for e in logs[3:]]
        assert resumed[-1].event == "end"
        with (
            server.http() as h,
            h.stream("GET", f"/v1/runs/{run_id}/logs", headers={"Last-Event-ID": "nope"}) as r,
        ):
            r.read()
            assert_error_envelope(r, 400)


def test_metrics_and_probes(server: RunServer) -> None:
    with server.http() as h:
        assert h.get("/healthz").json() == {"status": "ok"}
        ready = h.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["databases"] == "1/2 reachable"
        before = h.get("/metrics").text
        h.get("/v1/runs/does-not-exist")
        h.get("/no/such/route/xyz")
        after = h.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def value(body: str, line_start: str) -> float:
        for line in body.splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    key = 'sluice_http_requests_total{method="GET",route="/v1/runs/{run_id}",status="404"}'
    assert value(text, key) == value(before, key) + 1
    unmatched = 'sluice_http_requests_total{method="GET",route="<unmatched>",status="404"}'
    assert value(text, unmatched) >= 1
    assert "/no/such/route" not in text and "does-not-exist" not in text
    assert 'sluice_http_request_duration_seconds_bucket{le="0.005",method="GET"' in text
    assert "sluice_runs_queued " in text and "sluice_runs_running " in text
    assert 'sluice_runs_finished_total{reason="",status="completed"}' in text
    assert 'sluice_db_pool_size{database="pg"} 4.0' in text
    assert "sluice_result_store_bytes " in text
    assert 'sluice_safety_blocks_total{stage="' in text  # from test_submit_errors' block


def test_openapi_documents_the_run_routes(server: RunServer) -> None:
    with server.http() as h:
        paths = h.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/runs",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/cancel",
        "/v1/runs/{run_id}/logs",
        "/v1/runs/{run_id}/result",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    assert "202" in paths["/v1/runs"]["post"]["responses"]
    assert "429" in paths["/v1/runs"]["post"]["responses"]


# -- process lifecycle ---------------------------------------------------------------------------
def test_kill_9_then_restart(seeded_pg: PgServer, tmp_path: Path) -> None:
    limits: dict[str, object] = {"max_concurrent_runs": 1}
    srv = start(seeded_pg, tmp_path, **limits)
    with srv.client() as c:
        running = c.submit_run(slow_dag("crash"), config_format="json")["run_id"]
        wait_for(c, running, "running")
        queued = c.submit_run(DAG_YAML, name="after-crash")["run_id"]
        done = c.submit_run(slow_dag("crash-cancelled"), config_format="json")["run_id"]
        c.cancel(done)
    kill_tree(srv.process)
    srv2 = start(seeded_pg, tmp_path, **limits)
    try:
        with srv2.client() as c:
            record = c.run(running)
            assert record["status"] == "failed"
            assert record["error"]["reason"] == "server_restart"
            events = list(c.logs(running))
            assert events[-1].event == "end" and events[-1].data["status"] == "failed"
            assert "server_restart" in events[-2].data["message"]
            assert c.run(done)["status"] == "cancelled"  # nothing missing
            finished = wait_for(c, queued, "completed", "failed")
            assert finished["status"] == "completed" and finished["records_written"] == 250
    finally:
        stop(srv2)


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """kill -9 the server and any worker process it spawned."""
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    os.kill(process.pid, signal.SIGKILL)
    for pid in children:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def test_sigterm_drains(seeded_pg: PgServer, tmp_path: Path) -> None:
    srv = start(seeded_pg, tmp_path, run_grace_seconds=2)
    with srv.client() as c:
        slow = c.submit_run(slow_dag("drain"), config_format="json")["run_id"]
        wait_for(c, slow, "running")
        events: list[Event] = []

        def read() -> None:
            with srv.client() as c2:
                events.extend(c2.logs(slow))

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.3)
        started = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        with srv.http() as h:  # draining: not ready, no new runs, reads still served
            deadline = time.monotonic() + 1.5
            while (ready := h.get("/readyz")).status_code != 503:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.05)
            assert ready.json()["checks"]["run_store"] == "draining"
            r = h.post("/v1/runs", json={"config": DAG_YAML})
            assert_error_envelope(r, 503, "shutting_down")
            assert h.get(f"/v1/runs/{slow}").json()["status"] == "running"
        srv.process.wait(timeout=30)
        reader.join(timeout=10)
        elapsed = time.monotonic() - started
    assert not reader.is_alive()
    assert elapsed < 20, elapsed
    assert events and events[-1].event == "end", events[-3:]
    assert slow_queries(seeded_pg, marker("drain")) == 0
    srv2 = start(seeded_pg, tmp_path)
    try:
        with srv2.client() as c:
            record = c.run(slow)
            assert record["status"] == "cancelled", record
            assert record["error"]["reason"] == "shutdown"
    finally:
        stop(srv2)


def test_postgres_run_store(seeded_pg: PgServer, tmp_path: Path) -> None:
    """Two server processes share one PostgreSQL run store: a run submitted to one is
    visible and cancellable from the other; a crashed process's run is failed by the
    survivor once its heartbeat is stale."""
    schema = "runs_http"
    seeded_pg.run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    shared: dict[str, object] = {
        "run_store": f'"{seeded_pg.dsn}?schema={schema}"',
        "run_stale_seconds": 2,
    }
    a = start(seeded_pg, tmp_path / "a", **shared)
    b = start(seeded_pg, tmp_path / "b", **shared)
    try:
        with a.client() as ca, b.client() as cb:
            run_id = ca.submit_run(DAG_YAML, name="shared")["run_id"]
            record = wait_for(cb, run_id, "completed")
            assert record["records_written"] == 250
            slow = ca.submit_run(slow_dag("pg-store"), config_format="json")["run_id"]
            wait_for(cb, slow, "running")
            r = cb.cancel(slow)  # another process owns it: cancel goes through the store
            assert r["status"] == "running"
            assert wait_for(ca, slow, "cancelled", "failed", within=15)["status"] == "cancelled"
            orphan = ca.submit_run(slow_dag("pg-orphan"), config_format="json")["run_id"]
            owner = wait_for(cb, orphan, "running")
            assert owner["status"] == "running"
        kill_tree(a.process)
        with b.client() as cb:
            record = wait_for(cb, orphan, "failed", within=20)
            assert record["error"]["reason"] == "server_restart"
        rows = seeded_pg.run(f'SELECT count(*) AS n FROM "{schema}".runs')
        assert rows[0]["n"] == 3
    finally:
        stop(b)
        if a.process.poll() is None:
            stop(a)
        seeded_pg.run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_cli_submit_wait_and_output(server: RunServer, tmp_path: Path) -> None:
    dag = tmp_path / "dag.yaml"
    dag.write_text(DAG_YAML)
    out = tmp_path / "cli.csv"
    parser = argparse.ArgumentParser()
    add_run_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "run",
            "submit",
            "-f",
            str(dag),
            "--wait",
            "-o",
            str(out),
            "--url",
            server.url,
            "--name",
            "cli",
        ]
    )
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = args.func(args)
    assert code == 0, err.getvalue()
    assert "step items: completed, 250 rows" in err.getvalue()
    assert out.read_text().splitlines()[0] == '"id","kind","label"'
    assert len(out.read_text().splitlines()) == 251
    args = parser.parse_args(["run", "list", "--url", server.url, "--name", "cli"])
    outbuf = io.StringIO()
    with contextlib.redirect_stdout(outbuf):
        assert args.func(args) == 0
    assert "completed" in outbuf.getvalue()


def test_client_queries(server: RunServer) -> None:
    with server.client() as c:
        simple = c.query("pg", "run_items", "SELECT id FROM run_items WHERE id <= 3 ORDER BY id")
        assert simple["status"] == "ok"
        assert simple["data"]["rows"] == [{"id": 1}, {"id": 2}, {"id": 3}]
        steps = [
            {
                "step_id": "a",
                "database": "pg",
                "table": "run_items",
                "query": "SELECT id, kind FROM run_items",
            }
        ]
        fed = c.federated(steps, "SELECT kind, count(*) AS n FROM a GROUP BY kind ORDER BY kind")
        assert fed["data"]["rows"] == [
            {"kind": 0, "n": 83},
            {"kind": 1, "n": 84},
            {"kind": 2, "n": 83},
        ]
        paged = list(c.result_rows(fed["request_id"], size=2))
        assert paged == fed["data"]["rows"]
        with pytest.raises(ApiFailure) as info:
            c.query("pg", "run_items", "DELETE FROM run_items")
        assert info.value.status == 403 and info.value.code == "RBAC_GATE"


def test_block_scalar_queries_run(server: RunServer) -> None:
    """`query: >` and `query: |` (how multi-line SQL is written) are plain strings."""
    dag = (
        "steps:\n  - step_id: items\n    database: pg\n    table: run_items\n    query: >\n"
        "      SELECT id, kind\n      FROM run_items\n      WHERE id <= 0x0A\n"
        "merge: |\n  SELECT count(*) AS n\n  FROM items\n"
    ).replace("0x0A", "10")
    with server.client() as c:
        run_id = c.submit_run(dag, name="folded")["run_id"]
        record = wait_for(c, run_id, "completed", "failed")
        assert record["status"] == "completed", record
        assert list(c.result_rows(run_id)) == [{"n": 10}]


def test_runs_fail_on_truncation_unless_allowed(server: RunServer) -> None:
    """A run asked for the whole answer: a step cut at its cap fails the run (no silent
    partial result) unless the config sets allow_truncation; max_rows lowers the cap."""
    capped = DAG_YAML + "max_rows: 100\n"
    with server.client() as c:
        run_id = c.submit_run(capped, name="capped")["run_id"]
        record = wait_for(c, run_id, "completed", "failed")
        assert record["status"] == "failed", record
        assert record["error"]["code"] == "result_truncated"
        assert "more than 100 rows" in record["error"]["message"]
        allowed = c.submit_run(capped + "allow_truncation: true\n", name="allowed")["run_id"]
        record = wait_for(c, allowed, "completed", "failed")
        assert record["status"] == "completed", record
        assert record["records_written"] == 100
        # the default bound (safety.max_export_rows) is far above the inline cap
        whole = c.submit_run(DAG_YAML, name="whole")["run_id"]
        assert wait_for(c, whole, "completed", "failed")["records_written"] == 250
    with server.http() as h:
        too_many = DAG_YAML + "max_rows: 100000000\n"
        body = assert_error_envelope(h.post("/v1/runs", json={"config": too_many}), 422)
        assert "max_rows must be from 1 to 10,000,000" in body["error"]["message"]


def test_results_download_in_every_format(server: RunServer) -> None:
    import pyarrow as pa

    with server.client() as c:
        run_id = c.submit_run(DAG_YAML, name="formats")["run_id"]
        assert wait_for(c, run_id, "completed", "failed")["status"] == "completed"
    with server.http() as h:
        page = h.get(f"/v1/results/{run_id}", params={"size": 2}).json()
        assert page["rows"][0] == {"id": 1, "kind": 1, "label": "item 1"}
        got = {}
        for fmt in ("parquet", "csv", "ndjson", "arrow"):
            r = h.get(f"/v1/results/{run_id}", params={"format": fmt})
            assert r.status_code == 200, r.text
            assert f'filename="{run_id}.{fmt}"' in r.headers["content-disposition"]
            got[fmt] = r
        assert got["parquet"].headers["content-type"] == "application/vnd.apache.parquet"
        assert pq.read_table(io.BytesIO(got["parquet"].content)).num_rows == 250
        assert got["csv"].text.splitlines()[1] == '1,1,"item 1"'
        assert json.loads(got["ndjson"].text.splitlines()[-1])["id"] == 250
        stream = pa.ipc.open_stream(got["arrow"].content).read_all()
        assert stream.num_rows == 250 and stream.column_names == ["id", "kind", "label"]
        assert got["arrow"].headers["content-type"] == "application/vnd.apache.arrow.stream"
        run_arrow = h.get(f"/v1/runs/{run_id}/result", params={"format": "arrow"})
        assert run_arrow.content == got["arrow"].content
        bad = h.get(f"/v1/results/{run_id}", params={"format": "xlsx"})
        assert (
            "use one of parquet, csv, ndjson, arrow"
            in assert_error_envelope(bad, 400)["error"]["suggestion"]
        )
        assert_error_envelope(h.get("/v1/results/nope", params={"format": "csv"}), 404)

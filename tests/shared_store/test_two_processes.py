"""Two real `sluice serve` processes sharing the stores (runs in PostgreSQL, results in
SeaweedFS indexed in PostgreSQL), each with a data folder of its own: what one stores the
other pages, what one runs the other lists, follows, cancels, and fails once the first is
killed; and, as an attacker, another principal or a guessed id finds nothing from either."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from tests.api.conftest import Server, start_server, stop_server
from tests.s3_server import S3Server
from tests.servers import PgServer

TOKENS = {"alice": "tok-alice-2p", "bob": "tok-bob-2p", "admin": "tok-admin-2p"}
SPIN_ROWS = 40_000  # spin x spin: a query that runs until cancelled
SETUP = [
    "DROP TABLE IF EXISTS shared_items, spin",
    "CREATE TABLE shared_items (id int PRIMARY KEY, label text NOT NULL)",
    "INSERT INTO shared_items SELECT g, 'item ' || g FROM generate_series(1, 3000) g",
    "CREATE TABLE spin (n int)",
    f"INSERT INTO spin SELECT g FROM generate_series(1, {SPIN_ROWS}) g",
    "ANALYZE",
]
ITEMS = {
    "steps": [
        {
            "step_id": "i",
            "database": "pg",
            "table": "shared_items",
            "query": "SELECT id, label FROM shared_items ORDER BY id",
        }
    ]
}
STALE_S = 6.0  # run_stale_seconds of these servers


def slow_run(marker: str) -> dict[str, Any]:
    query = f"SELECT count(*) AS n FROM spin a CROSS JOIN spin b WHERE a.n > -{marker}"
    return {"steps": [{"step_id": "spin", "database": "pg", "table": "spin", "query": query}]}


def config_text(pg: PgServer, s3: S3Server, schema: str, prefix: str, data_dir: Path) -> str:
    tokens = "\n".join(
        f"    - principal: {p}\n      token: {t}" + ("\n      admin: true" if p == "admin" else "")
        for p, t in TOKENS.items()
    )
    grants = "\n".join(f"    {p}:\n      pg:\n        level: R" for p in TOKENS)
    return f"""\
databases:
  - name: pg
    type: postgresql
    host: {pg.host}
    port: {pg.port}
    database: {pg.database}
    user: {pg.user}
    pool_size: 2
auth:
  tokens:
{tokens}
permissions:
  principals:
{grants}
safety:
  max_rows_per_query: 100000
  inline_rows: 10
  query_timeout_seconds: 120
server:
  data_dir: {data_dir}
  run_store: {pg.dsn}?schema={schema}
  run_stale_seconds: {STALE_S}
  run_grace_seconds: 2
  max_concurrent_runs: 1
results:
  store: s3
  endpoint: {s3.endpoint}
  bucket: {s3.bucket}
  prefix: {prefix}
  access_key_env: SLUICE_TEST_S3_KEY
  secret_key_env: SLUICE_TEST_S3_SECRET
"""


@dataclass
class Pair:
    one: Server
    other: Server
    pg: PgServer
    env: dict[str, str]

    def revive(self, dead: Server) -> None:
        """A killed process started again with its config (so the next test has two)."""
        config = dead.config_path
        fresh = start_server(config.read_text(), config.parent, env=self.env, timeout=60)
        wait_ready(fresh)
        if self.one is dead:
            self.one = fresh
        else:
            self.other = fresh

    def client(self, server: Server, who: str | None = "alice") -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def start_pair(pg: PgServer, s3: S3Server, folder: Path) -> Pair:
    schema, prefix = f"two_{secrets.token_hex(4)}", f"two{secrets.token_hex(4)}/"
    env = {
        "SLUICE_TEST_S3_KEY": s3.access_key,
        "SLUICE_TEST_S3_SECRET": s3.secret_key,
        "PROMETHEUS_MULTIPROC_DIR": "",  # each process counts its own runs
    }
    servers: list[Server] = []
    try:
        for name in ("one", "other"):
            text = config_text(pg, s3, schema, prefix, folder / name / "state")
            servers.append(start_server(text, folder / name, env=env, timeout=60))
        for srv in servers:
            wait_ready(srv)
    except BaseException:
        for srv in servers:
            stop_server(srv)
        raise
    return Pair(servers[0], servers[1], pg, env)


def wait_ready(server: Server, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while (r := httpx.get(f"{server.url}/readyz")).status_code != 200:
        assert time.monotonic() < deadline, (r.text, server.log()[-3000:])
        time.sleep(0.2)


def stop_pair(pair: Pair) -> None:
    for srv in (pair.one, pair.other):
        if srv.process.poll() is None:
            stop_server(srv)


@pytest.fixture(scope="module")
def seeded(pg_server: PgServer) -> PgServer:
    pg_server.run(*SETUP)
    return pg_server


@pytest.fixture(scope="module")
def pair(
    seeded: PgServer, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    p = start_pair(seeded, s3, tmp_path_factory.mktemp("two"))
    try:
        yield p
    finally:
        stop_pair(p)
        stop_spins(seeded)


def stop_spins(pg: PgServer) -> None:
    """A killed server's query goes on in PostgreSQL until it ends: end it."""
    pg.run(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query LIKE '%CROSS JOIN spin%' AND pid <> pg_backend_pid()"
    )


def running_here(server: Server) -> int:
    """Runs executing in this process (its own gauge)."""
    text = httpx.get(f"{server.url}/metrics").text
    for line in text.splitlines():
        if line.startswith("sluice_runs_running "):
            return int(float(line.split()[1]))
    raise AssertionError("no sluice_runs_running in /metrics")


def wait_status(c: httpx.Client, run_id: str, *statuses: str, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        run = c.get(f"/v1/runs/{run_id}").json()
        if run["status"] in statuses:
            return dict(run)
        assert time.monotonic() < deadline, run
        time.sleep(0.1)


def owner_and_bystander(pair: Pair, within: float = 30) -> tuple[Server, Server]:
    """(the process running the one slow run in flight, the other)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for srv, rest in ((pair.one, pair.other), (pair.other, pair.one)):
            if running_here(srv) == 1 and running_here(rest) == 0:
                return srv, rest
        time.sleep(0.1)
    raise AssertionError("no process reports the run as its own")


# -- results ---------------------------------------------------------------------------------


def test_a_result_stored_by_one_pages_from_the_other(pair: Pair) -> None:
    with pair.client(pair.one) as one:
        r = one.post("/v1/query", json=ITEMS)
        assert r.status_code == 200, r.text[:300]
        rid = r.json()["request_id"]
        assert r.json()["data"]["row_count"] == 3000
    with pair.client(pair.other) as other:
        page = other.get(f"/v1/results/{rid}", params={"page": 3, "size": 1000}).json()
        assert page["total_rows"] == 3000 and page["has_more"] is False
        assert [row["id"] for row in page["rows"]] == list(range(2001, 3001))
        whole = other.get(f"/v1/results/{rid}", params={"format": "parquet"})
        assert whole.status_code == 200
        table = pq.read_table(io.BytesIO(whole.content))
        assert table.column("id").to_pylist() == list(range(1, 3001))
    # nothing of it on either process's disk: the other's data folder holds no result
    assert not list((pair.other.config_path.parent / "state" / "results").glob("*.parquet"))


def test_another_principal_or_a_guessed_id_finds_nothing_on_either(pair: Pair) -> None:
    with pair.client(pair.one, "alice") as alice:
        rid = alice.post("/v1/query", json=ITEMS).json()["request_id"]
    for server in (pair.one, pair.other):
        with pair.client(server, "bob") as bob:
            for params in ({"page": 1, "size": 10}, {"format": "csv"}):
                r = bob.get(f"/v1/results/{rid}", params=params)
                assert r.status_code == 404, r.text[:200]
                assert r.json()["error"]["code"] == "result_not_found"
            guessed = f"req_{secrets.token_hex(6)}"
            never = bob.get(f"/v1/results/{guessed}")
            assert never.status_code == 404
            # the same answer as for an id that exists: nothing tells bob it is there
            assert (
                never.json()["error"]["message"].replace(guessed, rid)
                == (bob.get(f"/v1/results/{rid}").json()["error"]["message"])
            )
        with pair.client(server, None) as anonymous:
            assert anonymous.get(f"/v1/results/{rid}").status_code == 401
        with pair.client(server, "admin") as admin:
            assert admin.get(f"/v1/results/{rid}").json()["total_rows"] == 3000
        with pair.client(server, "alice") as alice:
            for forged in (rid[:-1], rid + "0", "req_" + "0" * 12, f"{rid}.parquet"):
                assert alice.get(f"/v1/results/{forged}").status_code == 404


# -- runs ------------------------------------------------------------------------------------


def test_runs_are_listed_followed_and_cancelled_from_the_other(pair: Pair) -> None:
    """Each process runs one run at a time: the first slow run goes to X, the second, also
    submitted to X, is claimed by Y. Each run is followed from both processes and cancelled
    from the one not running it."""
    marker = str(secrets.randbelow(90_000) + 10_000)
    with pair.client(pair.one) as one:
        first = one.post("/v1/runs", json={"config": slow_run(marker)}).json()["run_id"]
        wait_status(one, first, "running")
    x, y = owner_and_bystander(pair)
    with pair.client(x) as c:
        r = c.post("/v1/runs", json={"config": slow_run(marker + "1")})
        assert r.status_code == 202, r.text[:300]
        second = r.json()["run_id"]
        wait_status(c, second, "running")
    assert running_here(x) == 1 and running_here(y) == 1  # the second one runs on y
    for server in (x, y):
        with pair.client(server) as c:
            listed = c.get("/v1/runs", params={"status": "running"}).json()["runs"]
            assert {first, second} <= {run["run_id"] for run in listed}
    events: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    followers = [
        threading.Thread(target=follow, args=(pair, srv, rid, events), daemon=True)
        for srv in (x, y)
        for rid in (first, second)
    ]
    for t in followers:
        t.start()
    deadline = time.monotonic() + 20
    while len(events) < 4 or not all(
        any("run started on" in d.get("message", "") for _, d in ev) for ev in events.values()
    ):
        assert time.monotonic() < deadline, events
        time.sleep(0.1)
    for run_id, canceller in ((first, y), (second, x)):  # never the process running it
        with pair.client(canceller) as c:
            cancelled_at = time.monotonic()
            assert c.post(f"/v1/runs/{run_id}/cancel").status_code == 202
            run = wait_status(c, run_id, "cancelled", within=15)
            took = time.monotonic() - cancelled_at
        assert run["error"]["reason"] == "cancelled"
        assert took < 5, took  # the runner sees the flag within a heartbeat (1 s), under load
    for t in followers:
        t.join(timeout=15)
        assert not t.is_alive(), "a follower's stream did not end"
    for where, ev in events.items():
        assert ev[-1] == ("end", {"status": "cancelled"}), (where, ev)
        logs = [d["message"] for k, d in ev if k == "log"]
        assert [k for k, _ in ev].count("truncated") == 0, (where, ev)
        assert logs[0].startswith("run queued") and "run started on" in logs[1], (where, logs)
        assert logs[-1].startswith("run cancelled"), (where, logs)
    assert running_here(x) == 0 and running_here(y) == 0


def follow(
    pair: Pair,
    server: Server,
    run_id: str,
    out: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]],
) -> None:
    got = out.setdefault((server.url, run_id), [])
    with (
        pair.client(server) as c,
        c.stream("GET", f"/v1/runs/{run_id}/logs", timeout=60) as r,
    ):
        assert r.status_code == 200
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind is not None:
                got.append((kind, json.loads(line.removeprefix("data: "))))
                if kind == "end":
                    return


def test_a_run_submitted_to_one_completes_and_its_result_pages_from_both(pair: Pair) -> None:
    with pair.client(pair.one) as one:
        run_id = one.post("/v1/runs", json={"config": ITEMS}).json()["run_id"]
        run = wait_status(one, run_id, "completed")
        assert run["records_written"] == 3000
    for server in (pair.one, pair.other):
        with pair.client(server) as c:
            assert c.get(f"/v1/results/{run_id}", params={"size": 5}).json()["total_rows"] == 3000
            csv = c.get(f"/v1/runs/{run_id}/result", params={"format": "csv"})
            assert csv.status_code == 200 and csv.text.count("\n") == 3001
        with pair.client(server, "bob") as bob:
            assert bob.get(f"/v1/runs/{run_id}/result").status_code == 404
            assert bob.delete(f"/v1/runs/{run_id}").status_code == 404
    # deleted from the other process: the run and its result are gone for both
    with pair.client(pair.other) as other:
        assert other.delete(f"/v1/runs/{run_id}").status_code == 204
    for server in (pair.one, pair.other):
        with pair.client(server) as c:
            assert c.get(f"/v1/runs/{run_id}").status_code == 404
            assert c.get(f"/v1/results/{run_id}").status_code == 404


def test_a_killed_process_runs_are_failed_by_the_other_which_keeps_serving(pair: Pair) -> None:
    with pair.client(pair.one) as one:
        stored = one.post("/v1/query", json=ITEMS).json()["request_id"]
        marker = str(secrets.randbelow(90_000) + 10_000)
        run_id = one.post("/v1/runs", json={"config": slow_run(marker)}).json()["run_id"]
        wait_status(one, run_id, "running")
    owner, survivor = owner_and_bystander(pair)
    os.kill(owner.process.pid, signal.SIGKILL)
    owner.process.wait()
    killed_at = time.monotonic()
    try:
        with pair.client(survivor) as c:
            run = wait_status(c, run_id, "failed", within=STALE_S + 20)
            took = time.monotonic() - killed_at
            assert run["error"]["reason"] == "server_restart", run
            # within run_stale_seconds of the kill (polling and a loaded machine add a little)
            assert took <= STALE_S + 1.0, took
            # the survivor keeps serving: queries, new runs, and results the dead one stored
            assert c.get(f"/v1/results/{stored}").json()["total_rows"] == 3000
            again = c.post("/v1/runs", json={"config": ITEMS}).json()["run_id"]
            assert wait_status(c, again, "completed")["records_written"] == 3000
            assert c.post("/v1/query", json=ITEMS).status_code == 200
    finally:
        stop_spins(pair.pg)
        pair.revive(owner)
    for server in (pair.one, pair.other):  # the restarted one included
        with pair.client(server) as c:
            assert c.get(f"/v1/runs/{run_id}").json()["status"] == "failed"

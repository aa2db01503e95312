"""The `sluice` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def sluice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_reports_every_problem_with_lines(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "databases:\n  - name: a\n    type: postgress\n  - name: b\n    type: sqlite\n"
        "    path: x.db\n    pool: 3\nserver:\n  port: high\n"
    )
    r = sluice("validate", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "bad.yaml: invalid configuration" in r.stderr
    assert "line 3: databases[0].type: Invalid enum value 'postgress'" in r.stderr
    assert "line 7: databases[1].pool: unknown key 'pool'; allowed keys:" in r.stderr
    assert "line 9: server.port: Expected `int`, got `str`" in r.stderr


def test_validate_ok_and_init_template_is_valid(tmp_path: Path) -> None:
    r = sluice("init", "s.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = sluice("validate", "s.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "s.yaml: ok (1 database(s))"
    assert sluice("init", "s.yaml", cwd=tmp_path).returncode == 1  # never overwrites silently


def test_query_prints_a_table_csv_and_json(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);"
        "INSERT INTO t VALUES (1, 'one'), (2, NULL);"
    )
    con.commit()
    con.close()
    (tmp_path / "sluice.yaml").write_text(
        f"databases:\n  - name: lite\n    type: sqlite\n    path: {db}\n"
        "permissions:\n  default:\n    lite:\n      level: R\n"
    )
    r = sluice("query", "-d", "lite", "-t", "t", "SELECT id, name FROM t ORDER BY id", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # numbers right-aligned, like psql
    assert r.stdout.splitlines() == ["id | name", "---+-----", " 1 | one", " 2 | NULL", "(2 rows)"]
    r = sluice(
        "query",
        "-d",
        "lite",
        "-t",
        "t",
        "--format",
        "csv",
        "SELECT id, name FROM t ORDER BY id",
        cwd=tmp_path,
    )
    assert r.stdout.splitlines() == ["id,name", "1,one", "2,"]
    r = sluice(
        "query",
        "-d",
        "lite",
        "-t",
        "t",
        "--format",
        "json",
        "SELECT count(*) AS n FROM t",
        cwd=tmp_path,
    )
    assert '"rows":[{"n":2}]' in r.stdout


def test_query_exit_codes(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    sqlite3.connect(db).executescript("CREATE TABLE t (id INTEGER); CREATE TABLE s (id INT);")
    (tmp_path / "sluice.yaml").write_text(
        f"databases:\n  - name: lite\n    type: sqlite\n    path: {db}\n"
        "permissions:\n  default:\n    lite:\n      level: R\n      tables:\n        s: none\n"
    )
    blocked = sluice("query", "-d", "lite", "-t", "s", "SELECT * FROM s", cwd=tmp_path)
    assert blocked.returncode == 2 and "blocked by RBAC_GATE" in blocked.stderr
    failed = sluice("query", "-d", "lite", "-t", "t", "SELECT nope FROM t", cwd=tmp_path)
    assert failed.returncode == 1 and "nope" in failed.stderr
    unknown = sluice("query", "-d", "lit", "-t", "t", "SELECT 1", cwd=tmp_path)
    assert unknown.returncode == 1 and "did you mean 'lite'" in unknown.stderr


def test_demo_is_created_once_and_queryable(tmp_path: Path) -> None:
    r = sluice(
        "query",
        "-d",
        "shop",
        "-t",
        "orders",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM orders",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["n", "3000"]
    demo = tmp_path / ".sluice" / "demo"
    stamp = (demo / "shop.sqlite").stat().st_mtime_ns
    r = sluice(
        "query",
        "-d",
        "analytics",
        "-t",
        "page_views",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM page_views",
        cwd=tmp_path,
    )
    assert r.stdout.splitlines() == ["n", "6000"]
    assert (demo / "shop.sqlite").stat().st_mtime_ns == stamp  # not rebuilt


DAG = """\
steps:
  - step_id: p
    database: lite
    table: people
    query: SELECT id, name FROM people
  - step_id: v
    database: duck
    table: visits
    query: SELECT person_id, ms FROM visits
    depends_on: [p]
    link_from: id
    link_to: person_id
merge: |
  SELECT p.name, count(*) AS n, sum(v.ms) AS ms FROM p JOIN v ON v.person_id = p.id
  GROUP BY p.name ORDER BY p.name
"""


def test_query_federated_dag_file_to_table_and_files(tmp_path: Path) -> None:
    import duckdb
    import pyarrow.parquet as pq

    lite, duck = tmp_path / "l.sqlite", tmp_path / "d.duckdb"
    con = sqlite3.connect(lite)
    con.executescript(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);"
        "INSERT INTO people VALUES (1, 'a'), (2, 'b'), (3, 'c');"
    )
    con.commit()
    con.close()
    d = duckdb.connect(str(duck))
    d.execute(
        "CREATE TABLE visits AS SELECT i AS id, 1 + i % 2 AS person_id, i AS ms FROM range(10) t(i)"
    )
    d.close()
    (tmp_path / "sluice.yaml").write_text(
        f"databases:\n  - name: lite\n    type: sqlite\n    path: {lite}\n"
        f"  - name: duck\n    type: duckdb\n    path: {duck}\n"
        "permissions:\n  default:\n    lite: {level: R}\n    duck: {level: R}\n"
    )
    (tmp_path / "dag.yaml").write_text(DAG)
    r = sluice("query", "-f", "dag.yaml", "--format", "csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # person 1 has the even ids 0..8 (sum 20), person 2 the odd ones (sum 25)
    assert r.stdout.splitlines() == ["name,n,ms", "a,5,20", "b,5,25"]
    r = sluice("query", "-f", "dag.yaml", "-o", "out.parquet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote 2 rows to out.parquet" in r.stderr
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [
        {"name": "a", "n": 5, "ms": 20},
        {"name": "b", "n": 5, "ms": 25},
    ]
    (tmp_path / "bad.yaml").write_text(DAG.replace("link_to", "link_too"))
    r = sluice("query", "-f", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "line 12: steps[1].link_too: unknown key 'link_too'" in r.stderr

"""The `sluice` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def sluice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluice.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_validate_reports_every_problem_with_lines(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "databases:\n  - name: a\n    type: postgress\n  - name: b\n    type: sqlite\n"
        "    path: x.db\n    pool: 3\nserver:\n  port: high\n")
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
    con.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);"
                      "INSERT INTO t VALUES (1, 'one'), (2, NULL);")
    con.commit()
    con.close()
    (tmp_path / "sluice.yaml").write_text(
        f"databases:\n  - name: lite\n    type: sqlite\n    path: {db}\n"
        "permissions:\n  default:\n    lite:\n      level: R\n")
    r = sluice("query", "-d", "lite", "-t", "t", "SELECT id, name FROM t ORDER BY id",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["id | name", "---+-----", "1  | one ", "2  | NULL",
                                     "(2 rows)"]
    r = sluice("query", "-d", "lite", "-t", "t", "--format", "csv",
               "SELECT id, name FROM t ORDER BY id", cwd=tmp_path)
    assert r.stdout.splitlines() == ["id,name", "1,one", "2,"]
    r = sluice("query", "-d", "lite", "-t", "t", "--format", "json",
               "SELECT count(*) AS n FROM t", cwd=tmp_path)
    assert '"rows":[{"n":2}]' in r.stdout


def test_query_exit_codes(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    sqlite3.connect(db).executescript("CREATE TABLE t (id INTEGER); CREATE TABLE s (id INT);")
    (tmp_path / "sluice.yaml").write_text(
        f"databases:\n  - name: lite\n    type: sqlite\n    path: {db}\n"
        "permissions:\n  default:\n    lite:\n      level: R\n      tables:\n        s: none\n")
    blocked = sluice("query", "-d", "lite", "-t", "s", "SELECT * FROM s", cwd=tmp_path)
    assert blocked.returncode == 2 and "blocked by RBAC_GATE" in blocked.stderr
    failed = sluice("query", "-d", "lite", "-t", "t", "SELECT nope FROM t", cwd=tmp_path)
    assert failed.returncode == 1 and "nope" in failed.stderr
    unknown = sluice("query", "-d", "lit", "-t", "t", "SELECT 1", cwd=tmp_path)
    assert unknown.returncode == 1 and "did you mean 'lite'" in unknown.stderr


def test_demo_is_created_once_and_queryable(tmp_path: Path) -> None:
    r = sluice("query", "-d", "shop", "-t", "orders", "--format", "csv",
               "SELECT count(*) AS n FROM orders", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["n", "3000"]
    demo = tmp_path / ".sluice" / "demo"
    stamp = (demo / "shop.sqlite").stat().st_mtime_ns
    r = sluice("query", "-d", "analytics", "-t", "page_views", "--format", "csv",
               "SELECT count(*) AS n FROM page_views", cwd=tmp_path)
    assert r.stdout.splitlines() == ["n", "6000"]
    assert (demo / "shop.sqlite").stat().st_mtime_ns == stamp  # not rebuilt

"""`sluice query`, `shell`, `completion` and `run` as a new user meets them: real
subprocesses over the embedded demo or a small SQLite file."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sluice.cli import build_parser
from tests.api.conftest import free_port

CLI = [sys.executable, "-m", "sluice.cli"]


def sluice(*args: str, cwd: Path, stdin: str | None = None, env: dict | None = None):
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def lite(tmp_path: Path) -> Path:
    db = tmp_path / "t.sqlite"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL);"
        "INSERT INTO t VALUES (1, 'one', 1.5), (2, NULL, 10), (3, 'three', NULL);"
        "CREATE TABLE u (id INTEGER);"
    )
    con.commit()
    con.close()
    (tmp_path / "sluice.yaml").write_text(
        f"databases:\n  - name: lite\n    type: sqlite\n    path: {db}\n"
        "permissions:\n  default:\n    lite:\n      level: R\n"
        f"server:\n  data_dir: {tmp_path / 'state'}\n  port: 1\n"
    )
    return tmp_path


def test_table_and_database_inferred_numbers_right_aligned(lite: Path) -> None:
    r = sluice("query", "SELECT id, name, score FROM t ORDER BY id", cwd=lite)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "id | name  | score",
        "---+-------+------",
        " 1 | one   |   1.5",
        " 2 | NULL  |  10.0",
        " 3 | three |  NULL",
        "(3 rows)",
    ]
    # a CTE is not a table; a query naming two tables must say which one with -t
    r = sluice("query", "WITH x AS (SELECT id FROM t) SELECT count(*) AS n FROM x", cwd=lite)
    assert r.returncode == 0 and r.stdout.splitlines()[2] == "3", r.stderr
    r = sluice("query", "SELECT t.id FROM t JOIN u ON u.id = t.id", cwd=lite)
    assert r.returncode == 1 and "names 2 tables (t, u)" in r.stderr and "-t TABLE" in r.stderr
    r = sluice("query", "-t", "t", "SELECT t.id FROM t JOIN u ON u.id = t.id", cwd=lite)
    assert r.returncode == 0, r.stderr
    r = sluice("query", "SELEC id FROM t", cwd=lite)  # a syntax error is named as such
    assert r.returncode == 1 and "SQL syntax error at line 1" in r.stderr, r.stderr


def test_query_from_stdin_and_from_a_file(lite: Path) -> None:
    r = sluice("query", "-", "--format", "csv", cwd=lite, stdin="SELECT id\nFROM t\nORDER BY id\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["id", "1", "2", "3"]
    (lite / "q.sql").write_text("SELECT name FROM t WHERE id = 1\n")
    r = sluice("query", "--sql-file", "q.sql", "--format", "ndjson", cwd=lite)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == [{"name": "one"}]
    r = sluice("query", "-F", "-", "--format", "ndjson", cwd=lite, stdin="SELECT id FROM t")
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [1, 2, 3]
    r = sluice("query", "--sql-file", "missing.sql", cwd=lite)
    assert r.returncode == 1 and "cannot read missing.sql" in r.stderr
    r = sluice("query", "-", cwd=lite, stdin="  \n")
    assert r.returncode == 1 and "empty" in r.stderr


def test_output_for_simple_queries_and_bad_output_refused_first(lite: Path) -> None:
    r = sluice("query", "SELECT id, name FROM t ORDER BY id", "-o", "out.parquet", cwd=lite)
    assert r.returncode == 0, r.stderr
    assert "wrote 3 rows to out.parquet" in r.stderr
    assert pq.read_table(lite / "out.parquet").to_pylist()[0] == {"id": 1, "name": "one"}
    r = sluice("query", "SELECT id FROM t", "-o", "out.ndjson", cwd=lite)
    assert (lite / "out.ndjson").read_text().splitlines()[0] == '{"id":1}'
    audit = lite / "state" / "audit.jsonl"
    before = len(audit.read_text().splitlines())
    for target, message in (
        ("out.xlsx", "cannot tell the format of out.xlsx"),
        ("nofolder/out.csv", "the folder"),
        (".", "cannot tell the format"),
    ):
        r = sluice("query", "SELECT id FROM t", "-o", target, cwd=lite)
        assert r.returncode == 1 and message in r.stderr, (target, r.stderr)
    assert len(audit.read_text().splitlines()) == before  # nothing ran


def test_json_format_prints_the_blocked_envelope_on_stdout(lite: Path) -> None:
    r = sluice("query", "--format", "json", "DELETE FROM t", cwd=lite)
    assert r.returncode == 2
    body = json.loads(r.stdout)
    assert body["status"] == "blocked" and body["error"]["stage"] == "RBAC_GATE"
    assert body["request_id"].startswith("req_")
    assert "blocked by RBAC_GATE" in r.stderr
    r = sluice("query", "--format", "json", "-d", "nope", "SELECT 1 FROM t", cwd=lite)
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "unknown_database"


def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    # the demo's 3000 orders as CSV, read by a consumer that stops after one line
    cmd = " ".join([sys.executable, "-m", "sluice.cli", "query", "-d", "shop", "--format", "csv"])
    r = subprocess.run(
        f"{cmd} 'SELECT * FROM orders' | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
        shell=True,
        executable="/bin/bash",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.stdout.splitlines()[0].startswith("id,")
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert r.stdout.splitlines()[-1] == "status=141"


def test_version_and_help_on_every_option() -> None:
    r = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "sluice 0.1.0"
    missing = []

    def walk(parser, path: str) -> None:
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "sluice")
    assert missing == []


def test_bash_completion_completes_commands_and_options(tmp_path: Path) -> None:
    script = subprocess.run(
        [*CLI, "completion", "bash"], capture_output=True, text=True, timeout=60
    ).stdout

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = (
            f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _sluice; "
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("sluice", "q") == ["query"]
    assert set(complete("sluice", "")) >= {"query", "shell", "run", "serve", "validate"}
    assert complete("sluice", "query", "--fo") == ["--format"]
    assert "--sql-file" in complete("sluice", "query", "--")
    assert complete("sluice", "run", "l") == ["list", "logs"]
    assert "--status" in complete("sluice", "run", "list", "--")
    (tmp_path / "dag.yaml").write_text("x")
    zsh = subprocess.run([*CLI, "completion", "zsh"], capture_output=True, text=True).stdout
    assert zsh.startswith("autoload -U +X bashcompinit")


def test_shell_explores_and_keeps_history(lite: Path) -> None:
    history = lite / "hist"
    r = sluice(
        "shell",
        cwd=lite,
        env={"SLUICE_HISTORY": str(history)},
        stdin="\\l\n\\dt\n\\d t\nSELECT id,\n  name FROM t\n  WHERE id = 1;\n"
        "\\format csv\nSELECT count(*) AS n FROM u;\nDELETE FROM t;\n\\c nope\n\\q\n",
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "lite     | sqlite | true      |      2" in out
    assert "t     |       3 |" in out  # \\dt: t has 3 columns
    assert "id     | BIGINT  | false    | true" in out
    assert " 1 | one" in out
    assert "n\n0\n" in out
    assert "blocked by RBAC_GATE" in r.stderr and "no database 'nope'" in r.stderr
    saved = history.read_text()
    assert "SELECT count(*) AS n FROM u;" in saved and "\\dt" in saved


def test_shell_on_a_terminal_prompts(lite: Path) -> None:
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "shell"],
        cwd=lite,
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, "SLUICE_HISTORY": str(lite / "h"), "TERM": "dumb"},
    )
    os.close(child)
    os.write(main, b"SELECT name FROM t WHERE id = 3;\n\\q\n")
    seen = b""
    while proc.poll() is None or not seen.endswith(b""):
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(30)
    os.close(main)
    text = seen.decode(errors="replace")
    assert "lite=> " in text and "three" in text and "\\? for help" in text


def test_run_reads_the_server_from_sluice_yaml_and_names_it(lite: Path) -> None:
    port = free_port()
    (lite / "sluice.yaml").write_text(
        (lite / "sluice.yaml").read_text().replace("port: 1", f"port: {port}")
    )
    r = sluice("run", "list", cwd=lite, env={"SLUICE_URL": ""})
    assert r.returncode == 1
    assert f"cannot connect to the sluice server at http://127.0.0.1:{port}" in r.stderr
    r = sluice("run", "list", cwd=lite, env={"SLUICE_URL": "http://127.0.0.1:9"})
    assert "at http://127.0.0.1:9" in r.stderr
    r = sluice("run", "list", "--url", f"http://localhost:{port}", cwd=lite)
    assert f"at http://localhost:{port}" in r.stderr


DAG = """\
steps:
  - step_id: a
    database: lite
    table: t
    query: >
      SELECT id, name
      FROM t
merge: |
  SELECT count(*) AS n FROM a
"""


def test_progress_on_a_terminal_and_plain_otherwise(lite: Path) -> None:
    (lite / "dag.yaml").write_text(DAG)
    r = sluice("query", "-f", "dag.yaml", "--format", "csv", cwd=lite)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["n", "3"] and "\x1b[" not in r.stderr
    r = sluice("query", "-f", "dag.yaml", "--dry-run", cwd=lite)  # block scalars: no traceback
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "dry_run", r.stderr
    main, child = pty.openpty()
    proc = subprocess.run(
        [*CLI, "query", "-f", "dag.yaml", "--format", "csv"],
        cwd=lite,
        stdout=subprocess.PIPE,
        stderr=child,
        timeout=120,
    )
    os.close(child)
    err = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(main)
    assert proc.returncode == 0
    text = err.decode()
    assert "\x1b[2K" in text and "a: finished" in text and "rows/s" in text, text


BIG = """\
steps:
  - step_id: a
    database: lite
    table: big
    query: SELECT i FROM big
merge: SELECT count(*) AS n, max(i) AS top FROM a
"""


def test_exports_have_their_own_bound_and_never_truncate_silently(lite: Path) -> None:
    con = sqlite3.connect(lite / "t.sqlite")
    con.execute("CREATE TABLE big (i INTEGER)")
    con.executemany("INSERT INTO big VALUES (?)", [(i,) for i in range(1, 251)])
    con.commit()
    con.close()
    cfg = lite / "sluice.yaml"
    cfg.write_text(cfg.read_text() + "safety:\n  max_rows_per_query: 100\n  max_export_rows: 200\n")
    (lite / "big.yaml").write_text(BIG)
    # printing is an inline query: capped at 100 rows per step, flagged, not an error
    r = sluice("query", "-f", "big.yaml", "--format", "csv", cwd=lite)
    assert r.returncode == 0 and r.stdout.splitlines() == ["n,top", "100,100"], r.stderr
    assert "truncated" in r.stderr
    # an export asked for the whole answer: 250 rows exceed its bound of 200 -> fails
    r = sluice("query", "-f", "big.yaml", "-o", "out.csv", cwd=lite)
    assert r.returncode == 1, r.stderr
    assert "step 'a' returned more than 200 rows" in r.stderr and "nothing was written" in r.stderr
    assert not (lite / "out.csv").exists()
    # max_rows lowers the cap within the bound; allow_truncation accepts the cut
    r = sluice("query", "-f", "big.yaml", "-o", "out.csv", "--max-rows", "50", cwd=lite)
    assert r.returncode == 1 and "raise max_rows (up to 200" in r.stderr
    r = sluice(
        "query",
        "-f",
        "big.yaml",
        "-o",
        "out.csv",
        "--max-rows",
        "50",
        "--allow-truncation",
        cwd=lite,
    )
    assert r.returncode == 0, r.stderr
    assert (lite / "out.csv").read_text().splitlines() == ['"n","top"', "50,50"]
    # above the bound: refused before running, naming the bound
    r = sluice("query", "-f", "big.yaml", "-o", "out.csv", "--max-rows", "500", cwd=lite)
    assert r.returncode == 1 and "max_rows must be from 1 to 200" in r.stderr
    # the bound is raised in the config: the whole answer, no flag needed
    cfg.write_text(cfg.read_text().replace("max_export_rows: 200", "max_export_rows: 1000"))
    r = sluice("query", "-f", "big.yaml", "-o", "out.csv", cwd=lite)
    assert r.returncode == 0 and (lite / "out.csv").read_text().splitlines()[1] == "250,250"
    # a simple query written with -o takes the same path
    r = sluice("query", "SELECT i FROM big", "-o", "all.ndjson", cwd=lite)
    assert r.returncode == 0 and len((lite / "all.ndjson").read_text().splitlines()) == 250

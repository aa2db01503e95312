"""`sluice validate` / `doctor` as a new user meets them: exact paths and lines (walked, not
recovered from msgspec's text), sorted, and grants that name nothing are warned about."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

BAD = """\
databases:
  - name: pg
    type: sqlite
    path: t.sqlite
    pool: 3
permissions:
  default:
    pg:
      level: X
      tables:
        users: {level: Q, deny: [email]}
server:
  port: high
safety:
  max_rows_per_query: -1
"""

GOOD = """\
databases:
  - name: pg
    type: sqlite
    path: t.sqlite
  - name: maria
    type: mariadb
    host: 127.0.0.1
    port: 1
    connect_timeout_seconds: 1
permissions:
  default:
    pg:
      level: R
      tables:
        userz: none
        users: R
    pgg:
      level: R
  principals:
    alice:
      mariadb: {level: R}
"""


def sluice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_errors_have_exact_paths_and_lines_sorted(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD)
    r = sluice("validate", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()[1:]
    assert lines == [
        "  line 5: databases[0].pool: unknown key 'pool'; allowed keys: name, type, pool_size, "
        "connect_timeout_seconds, query_timeout_seconds, description, path",
        "  line 9: permissions.default.pg.level: Invalid enum value 'X'; allowed: R, W, RW, "
        "RA, RWA, A, none",
        "  line 11: permissions.default.pg.tables.users.deny: unknown key 'deny'; allowed "
        "keys: level, deny_columns",
        "  line 11: permissions.default.pg.tables.users.level: Invalid enum value 'Q'; "
        "allowed: R, W, RW, RA, RWA, A, none",
        "  line 13: server.port: Expected `int`, got `str`",
        "  line 15: safety.max_rows_per_query: Expected `int` >= 1",
    ]


def test_grants_naming_nothing_are_warned_about(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "t.sqlite")
    con.execute("CREATE TABLE users (id INTEGER)")
    con.commit()
    con.close()
    (tmp_path / "sluice.yaml").write_text(GOOD)
    r = sluice("validate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # `type: mariadb` is the MySQL connector
    assert r.stdout.strip() == "sluice.yaml: ok (2 database(s))"
    assert r.stderr.splitlines() == [
        "warning: line 17: permissions.default.pgg: grants on database 'pgg', which is not "
        "configured; did you mean 'pg'?",
        "warning: line 21: permissions.principals.alice.mariadb: grants on database "
        "'mariadb', which is not configured; did you mean 'maria'?",
    ]
    # doctor discovers the tables too: `userz` is a typo of `users`
    r = sluice("doctor", cwd=tmp_path)
    assert r.returncode == 1  # maria is unreachable on port 1
    assert "ok    pg (sqlite): 1 table(s)" in r.stdout
    assert (
        "warn  line 15: permissions.default.pg.tables.userz: grants on table 'userz', "
        "which 'pg' does not have; did you mean 'users'?"
    ) in r.stdout
    assert "permissions.default.pg.tables.users:" not in r.stdout

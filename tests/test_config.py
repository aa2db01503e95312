from __future__ import annotations

import pytest

from engine.config import load_config_text
from engine.errors import ConfigError


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.yaml", env or {})
    return info.value.problems


def test_valid_config_with_interpolation() -> None:
    cfg = load_config_text(
        "databases:\n"
        "  - name: pg\n    type: postgresql\n    host: ${H:-127.0.0.1}\n    port: ${P}\n"
        "    password: ${PW}\n"
        "  - name: lite\n    type: sqlite\n    path: /tmp/x.sqlite\n"
        "safety:\n  max_rows_per_query: 50\n",
        "t.yaml",
        {"P": "6543", "PW": "s3cret"},
    )
    pg = cfg.database("pg")
    assert pg is not None and pg.host == "127.0.0.1" and pg.port == 6543
    assert pg.password == "s3cret"
    assert cfg.safety.max_rows_per_query == 50
    assert [d.name for d in cfg.databases] == ["pg", "lite"]


def test_unknown_key_names_line_and_allowed_keys() -> None:
    (p,) = problems("databases:\n  - name: a\n    type: sqlite\n    path: x\n    hots: 1\n")
    assert p.startswith("line 5: databases[0].hots: unknown key 'hots'; allowed keys: name, type")


def test_wrong_type_names_line_and_key() -> None:
    (p,) = problems("server:\n  host: 0.0.0.0\n  port: abc\n")
    assert p == "line 3: server.port: Expected `int`, got `str`"


def test_unknown_type_lists_allowed() -> None:
    (p,) = problems("databases:\n  - name: a\n    type: postgress\n")
    assert p.startswith("line 3: databases[0].type: Invalid enum value 'postgress'")
    assert "did you mean 'postgresql'?" in p
    allowed = set(p.split("allowed types: ", 1)[1].split(", "))
    assert {"postgresql", "mysql", "mariadb", "sqlite", "duckdb", "mongodb"} <= allowed


def test_duplicate_database_name() -> None:
    (p,) = problems(
        "databases:\n  - name: a\n    type: sqlite\n    path: x\n"
        "  - name: a\n    type: duckdb\n    path: y\n"
    )
    assert p == (
        "line 5: databases[1].name: duplicate database name 'a' (first defined on "
        "line 2); names must be unique"
    )


def test_unknown_section_and_missing_env_reported_together() -> None:
    ps = problems(
        "sever:\n  port: 1\ndatabases:\n  - name: a\n    type: sqlite\n    path: ${NOPE}\n"
    )
    assert any(p.startswith("line 1: sever: unknown section") for p in ps)
    assert any("environment variable NOPE is not set" in p for p in ps)


def test_file_database_needs_path() -> None:
    (p,) = problems("databases:\n  - name: a\n    type: duckdb\n")
    assert p == "line 2: databases[0]: a duckdb database needs `path` (the database file)"


def test_duplicate_yaml_key() -> None:
    (p,) = problems("server:\n  port: 1\n  port: 2\n")
    assert p.startswith("line 3: (yaml)")


def test_token_needs_exactly_one_secret() -> None:
    (p,) = problems("auth:\n  tokens:\n    - principal: a\n")
    assert p == (
        "line 3: auth.tokens[0]: give exactly one of `token` (e.g. ${SLUICE_TOKEN}) "
        "or `token_sha256`"
    )

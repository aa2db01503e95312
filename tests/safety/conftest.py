"""Shared pieces of the safety tests: the corpus policy and a one-call `run()` helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from engine.config import Config, load_config_text
from safety.pipeline import STAGES, check
from safety.types import CheckRequest, SafetyOutcome, Step
from safety.verdicts import Stage

CORPUS = Path(__file__).parent / "corpus"

# dialect -> (database name, database type) used by every corpus entry
DATABASES: dict[str, tuple[str, str]] = {
    "postgres": ("pg", "postgresql"),
    "mysql": ("my", "mysql"),
    "sqlite": ("lite", "sqlite"),
    "duckdb": ("duck", "duckdb"),
    "mql": ("mongo", "mongodb"),
}

# One policy for every corpus database: users and orders writable (users with denied
# columns), items read-only, secrets denied, everything else not granted. The catalog
# entries are deliberately over-broad: INJECTION_ANALYSER must still refuse credentials.
TABLES_POLICY = """
      tables:
        users: {level: RW, deny_columns: [ssn, password_hash]}
        orders: RW
        items: R
        audit_log: R
        secrets: none
        scratch: RWA
        pg_catalog.pg_authid: R
        pg_shadow: R
        mysql.user: R
        information_schema.tables: R
"""

CORPUS_CONFIG = f"""
databases:
  - {{name: pg, type: postgresql, host: 127.0.0.1, database: shop, password: pg-s3cret}}
  - {{name: my, type: mysql, host: 127.0.0.1, database: shop}}
  - {{name: lite, type: sqlite, path: /tmp/corpus.sqlite}}
  - {{name: duck, type: duckdb, path: /tmp/corpus.duckdb, query_timeout_seconds: 5}}
  - {{name: mongo, type: mongodb, host: 127.0.0.1, database: shop}}
safety:
  max_rows_per_query: 100
  query_timeout_seconds: 20
permissions:
  default:
    pg:{TABLES_POLICY}
    my:{TABLES_POLICY}
    lite:{TABLES_POLICY}
    duck:{TABLES_POLICY}
    mongo:{TABLES_POLICY}
"""


def corpus_config() -> Config:
    return load_config_text(CORPUS_CONFIG, "corpus.yaml")


@pytest.fixture(scope="session")
def config() -> Config:
    return corpus_config()


def load_corpus(name: str) -> list[dict[str, Any]]:
    data = YAML(typ="safe").load((CORPUS / name).read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


def expand(entries: list[dict[str, Any]]) -> list[Any]:
    """One pytest param per (entry, dialect), named by dialect and a short query."""
    params = []
    for i, entry in enumerate(entries):
        for dialect in entry["dialects"]:
            label = f"{dialect}-{i}-{' '.join(str(entry['query']).split())[:40]}"
            params.append(pytest.param(entry, dialect, id=label))
    return params


def run(
    config: Config,
    query: str,
    table: str,
    dialect: str = "postgres",
    *,
    principal: str | None = None,
    language: str | None = None,
    stages: tuple[Stage, ...] = STAGES,
    body_bytes: int = 0,
) -> SafetyOutcome:
    database, _ = DATABASES[dialect]
    step = Step(
        database=database,
        table=table,
        query=query,
        language=language,
    )
    request = CheckRequest(steps=[step], principal=principal, body_bytes=body_bytes)
    return check(request, config, stages=stages)

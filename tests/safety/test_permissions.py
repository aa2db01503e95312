"""Every level x every operation class, for SQL and MQL, against the table in
safety/policy.py; plus which policy entry applies (principals, default, schemas, baseline)."""

from __future__ import annotations

import pytest

from engine.config import Config, load_config_text
from safety.pipeline import check
from safety.policy import GRANTS, UNBOUNDED
from safety.types import CheckRequest, Step
from tests.safety.conftest import run

LEVELS = ("none", "R", "W", "RW", "A", "RA", "RWA")


def matrix_config(dialect_db: str = "pg", db_type: str = "postgresql") -> Config:
    tables = "\n".join(f"        t_{level.lower()}: {level}" for level in LEVELS)
    return load_config_text(f"""
databases:
  - {{name: {dialect_db}, type: {db_type}, host: 127.0.0.1}}
permissions:
  default:
    {dialect_db}:
      tables:
{tables}
""")


# operation class -> (SQL template, what the policy must grant)
SQL_OPS: dict[str, tuple[str, set[str]]] = {
    "select": ("SELECT id FROM {t} WHERE id = 1", {"SELECT"}),
    "insert": ("INSERT INTO {t} (id) VALUES (1)", {"INSERT"}),
    "update": ("UPDATE {t} SET v = 1 WHERE id = 1", {"UPDATE"}),
    "delete": ("DELETE FROM {t} WHERE id = 1", {"DELETE"}),
    "update_all": ("UPDATE {t} SET v = 1", {"UPDATE", UNBOUNDED}),
    "delete_all": ("DELETE FROM {t}", {"DELETE", UNBOUNDED}),
    "ddl_alter": ("ALTER TABLE {t} ADD COLUMN z INT", {"DDL"}),
    "ddl_drop": ("DROP TABLE {t}", {"DDL"}),
    "ddl_truncate": ("TRUNCATE TABLE {t}", {"DDL"}),
    "ddl_index": ("CREATE INDEX ix ON {t} (id)", {"DDL"}),
    "returning": ("DELETE FROM {t} WHERE id = 1 RETURNING id", {"DELETE", "SELECT"}),
    "explain": ("EXPLAIN DELETE FROM {t} WHERE id = 1", {"SELECT"}),
    "explain_analyze": ("EXPLAIN ANALYZE DELETE FROM {t} WHERE id = 1", {"DELETE"}),
}

MQL_OPS: dict[str, tuple[str, set[str]]] = {
    "find": ('{"operation": "find", "filter": {"id": 1}}', {"SELECT"}),
    "aggregate": ('{"operation": "aggregate", "pipeline": []}', {"SELECT"}),
    "count": ('{"operation": "count", "filter": {}}', {"SELECT"}),
    "insertOne": ('{"operation": "insertOne", "document": {"id": 1}}', {"INSERT"}),
    "updateOne": (
        '{"operation": "updateOne", "filter": {"id": 1}, "update": {"$set": {"v": 1}}}',
        {"UPDATE"},
    ),
    "replaceOne": (
        '{"operation": "replaceOne", "filter": {"id": 1}, "replacement": {"v": 1}}',
        {"UPDATE"},
    ),
    "deleteOne": ('{"operation": "deleteOne", "filter": {"id": 1}}', {"DELETE"}),
    "updateMany_all": (
        '{"operation": "updateMany", "filter": {}, "update": {"$set": {"v": 1}}}',
        {"UPDATE", UNBOUNDED},
    ),
    "deleteMany_all": ('{"operation": "deleteMany", "filter": {}}', {"DELETE", UNBOUNDED}),
    "deleteMany": ('{"operation": "deleteMany", "filter": {"v": 1}}', {"DELETE"}),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("op", SQL_OPS)
def test_sql_level_by_operation(level: str, op: str) -> None:
    config = matrix_config()
    table = f"t_{level.lower()}"
    template, needs = SQL_OPS[op]
    outcome = run(config, template.format(t=table), table, "postgres")
    allowed = needs <= GRANTS[level]
    assert outcome.allowed is allowed, (level, op, outcome.block)
    if allowed:
        (step,) = outcome.steps
        writes = needs & {"INSERT", "UPDATE", "DELETE", "DDL"}
        assert step.readonly is (not writes), step
    else:
        assert outcome.block is not None and outcome.block.stage == "RBAC_GATE"
        assert f"permissions.default.pg.tables.{table}={level}" in (
            outcome.verdicts[-1].policy or ""
        )


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("op", MQL_OPS)
def test_mql_level_by_operation(level: str, op: str) -> None:
    config = matrix_config("mongo", "mongodb")
    table = f"t_{level.lower()}"
    body, needs = MQL_OPS[op]
    outcome = run(config, body, table, "mql")
    assert outcome.allowed is (needs <= GRANTS[level]), (level, op, outcome.block)


def test_grants_table_matches_the_documented_levels() -> None:
    assert GRANTS["R"] == {"SELECT"}
    assert GRANTS["W"] == {"INSERT", "UPDATE", "DELETE"}
    assert GRANTS["A"] == {"DDL"}
    assert GRANTS["RWA"] >= GRANTS["RW"] | GRANTS["A"] | {UNBOUNDED}
    assert GRANTS["none"] == set()


POLICY = """
databases:
  - {name: pg, type: postgresql, host: 127.0.0.1}
  - {name: my, type: mysql, host: 127.0.0.1, database: shop}
  - {name: nobody, type: postgresql, host: 127.0.0.1}
permissions:
  default:
    pg:
      level: R
      tables:
        payments: none
        public.audit: RW
    my:
      tables:
        orders: R
  principals:
    agent:
      pg:
        tables:
          payments: R
"""


@pytest.fixture
def policy() -> Config:
    return load_config_text(POLICY)


def _one(
    config: Config,
    query: str,
    table: str,
    database: str = "pg",
    principal: str | None = None,
):  # type: ignore[no-untyped-def]
    step = Step(database=database, table=table, query=query)
    return check(CheckRequest(steps=[step], principal=principal), config)


def test_baseline_covers_unlisted_tables(policy: Config) -> None:
    outcome = _one(policy, "SELECT id FROM anything", "anything")
    assert outcome.allowed
    assert outcome.verdicts[1].policy == "permissions.default.pg.level=R"


def test_table_entry_overrides_baseline_with_reason_and_suggestion(policy: Config) -> None:
    outcome = _one(policy, "SELECT id FROM payments", "payments")
    assert outcome.block is not None
    assert outcome.block.reason == (
        "Access denied: pg.payments requires permission for SELECT; policy grants none"
    )
    assert outcome.block.suggestion == (
        "add `payments: R` under permissions.default.pg.tables in sluice.yaml"
    )


def test_principal_gets_its_own_set(policy: Config) -> None:
    outcome = _one(policy, "SELECT id FROM payments", "payments", principal="agent")
    assert outcome.allowed
    assert "permissions.principals.agent.pg.tables.payments=R" in outcome.verdicts[1].policy
    # the principal's set has no baseline: other tables are denied
    denied = _one(policy, "SELECT id FROM other", "other", principal="agent")
    assert denied.block is not None and denied.block.stage == "RBAC_GATE"
    assert "permissions.principals.agent.pg.tables" in (denied.block.suggestion or "")


def test_unknown_principal_falls_back_to_default(policy: Config) -> None:
    outcome = _one(policy, "SELECT id FROM anything", "anything", principal="stranger")
    assert outcome.allowed
    assert outcome.verdicts[1].policy == "permissions.default.pg.level=R"


def test_database_absent_from_the_set_is_denied(policy: Config) -> None:
    outcome = _one(policy, "SELECT 1 FROM t", "t", database="nobody")
    assert outcome.block is not None and outcome.block.stage == "RBAC_GATE"
    assert outcome.verdicts[-1].policy == "permissions.default.nobody (absent)=none"


def test_schema_qualified_entry_and_default_schema_fallback(policy: Config) -> None:
    # "public.audit: RW" matches the qualified name and, public being the default schema,
    # the bare one too
    assert _one(policy, "DELETE FROM public.audit WHERE id = 1", "public.audit").allowed
    # bare `payments: none` also covers public.payments
    blocked = _one(policy, "SELECT id FROM public.payments", "public.payments")
    assert blocked.block is not None and "payments.tables.payments" not in blocked.block.reason
    assert blocked.block.stage == "RBAC_GATE"
    # another schema never falls back to the bare entry: only the baseline applies
    other = _one(policy, "SELECT id FROM archive.payments", "archive.payments")
    assert other.allowed and other.verdicts[1].policy == "permissions.default.pg.level=R"


def test_mysql_default_schema_is_the_configured_database(policy: Config) -> None:
    assert _one(policy, "SELECT id FROM shop.orders", "orders", "my").allowed
    other = _one(policy, "SELECT id FROM other_db.orders", "orders", "my")
    assert other.block is not None and other.block.stage == "RBAC_GATE"
    assert "my.other_db.orders" in other.block.reason

"""Stages one at a time, the guardrails' rewrite, and the request-level behaviour of the
pipeline (verdicts, warnings, deny_policy PARTIAL/BLOCK, languages, limits)."""

from __future__ import annotations

import msgspec
import pytest
import sqlglot

from engine.config import Config, load_config_text
from safety.ast_checker import AstChecker
from safety.guardrails import Guardrails
from safety.injection_analyser import InjectionAnalyser
from safety.languages.sql_parse import parse
from safety.pipeline import STAGES, check
from safety.prompt_guard import PromptGuard
from safety.rbac_gate import RbacGate
from safety.types import CheckRequest, Step
from tests.safety.conftest import CORPUS_CONFIG, run


def test_stage_names_and_order() -> None:
    assert [s.name for s in STAGES] == [
        "PROMPT_GUARD",
        "RBAC_GATE",
        "AST_CHECKER",
        "INJECTION_ANALYSER",
        "GUARDRAILS",
    ]


# --- one stage at a time ------------------------------------------------------------------


def test_ast_checker_alone(config: Config) -> None:
    only = (AstChecker(),)
    blocked = run(config, "SELECT pg_sleep(1)", "items", stages=only)
    assert blocked.block is not None and blocked.block.stage == "AST_CHECKER"
    stacked = run(config, "SELECT 1; SELECT 2", "items", stages=only)
    assert stacked.block is not None and "2 statements" in stacked.block.reason
    # secrets are RBAC's business, not AST_CHECKER's... but the level check still applies
    ok = run(config, "SELECT id FROM items", "items", stages=only)
    assert ok.allowed and ok.stages_passed == ["AST_CHECKER"]


def test_injection_analyser_alone_catches_what_ast_checker_also_catches(config: Config) -> None:
    only = (InjectionAnalyser(),)
    for query in (
        "SELECT pg_sleep(1)",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT 1; DROP TABLE items",
    ):
        outcome = run(config, query, "items", stages=only)
        assert outcome.block is not None and outcome.block.stage == "INJECTION_ANALYSER"
    mysql = run(config, "SELECT BENCHMARK(100, MD5('a'))", "items", "mysql", stages=only)
    assert mysql.block is not None and "time-based" in mysql.block.reason


def test_rbac_alone_does_not_judge_syntax(config: Config) -> None:
    outcome = run(config, "SELECT id FROM items WHERE (", "items", stages=(RbacGate(),))
    assert outcome.allowed  # the declared table is readable; AST_CHECKER reports the error
    denied = run(config, "SELECT (", "secrets", stages=(RbacGate(),))
    assert denied.block is not None and denied.block.stage == "RBAC_GATE"


def test_prompt_guard_alone_never_parses(config: Config) -> None:
    outcome = run(config, "SELECT FROM WHERE ((", "items", stages=(PromptGuard(),))
    assert outcome.allowed and outcome.stages_passed == ["PROMPT_GUARD"]


def test_guardrails_alone_rewrite(config: Config) -> None:
    outcome = run(config, "SELECT id FROM items", "items", stages=(Guardrails(),))
    assert outcome.steps[0].text == "SELECT id FROM items LIMIT 101"


# --- PROMPT_GUARD --------------------------------------------------------------------------


def test_body_and_query_limits(config: Config) -> None:
    big = run(config, "SELECT 1", "items", body_bytes=config.server.body_limit_bytes + 1)
    assert big.block is not None and big.block.stage == "PROMPT_GUARD"
    assert "server.body_limit_bytes" in big.block.reason
    long_query = "SELECT 1 " + " " * config.safety.max_query_chars
    long = run(config, long_query, "items")
    assert long.block is not None and "safety.max_query_chars" in long.block.reason


@pytest.mark.parametrize(
    ("language", "fragment"),
    [
        ("mql", "does not match database 'pg'"),
        ("cobol", "unknown language 'cobol'"),
    ],
)
def test_language_must_match_the_database_type(
    config: Config, language: str, fragment: str
) -> None:
    outcome = run(config, "SELECT id FROM items", "items", language=language)
    assert outcome.block is not None and outcome.block.stage == "PROMPT_GUARD"
    assert fragment in outcome.block.reason
    assert outcome.block.invalid == "invalid_request"  # malformed (400), not a refusal (403)
    assert run(config, "SELECT id FROM items", "items", language="sql").allowed


def test_dialect_comes_from_the_type_not_the_name() -> None:
    config = load_config_text("""
databases:
  - {name: postgres, type: mysql, host: 127.0.0.1, database: shop}
permissions: {default: {postgres: {level: R}}}
""")
    step = Step(database="postgres", table="t", query="SELECT `a` FROM t")
    outcome = check(CheckRequest(steps=[step]), config)
    assert outcome.allowed
    assert outcome.steps[0].dialect == "mysql"
    assert outcome.steps[0].text == "SELECT `a` FROM t LIMIT 10001"


def test_an_unconfigured_database_is_blocked(config: Config) -> None:
    """Its type comes from the config only, so a database absent from it has none."""
    step = Step(database="x", table="t", query="SELECT 1")
    outcome = check(CheckRequest(steps=[step]), config)
    assert outcome.block is not None and outcome.block.stage == "PROMPT_GUARD"
    assert "'x' is not configured" in outcome.block.reason


# --- GUARDRAILS ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "query", "expected"),
    [
        ("postgres", "SELECT id FROM items", "SELECT id FROM items LIMIT 101"),
        ("postgres", "SELECT id FROM items LIMIT 5", "SELECT id FROM items LIMIT 5"),
        ("postgres", "SELECT id FROM items LIMIT 100", "SELECT id FROM items LIMIT 100"),
        ("postgres", "SELECT id FROM items LIMIT 500", "SELECT id FROM items LIMIT 101"),
        ("postgres", "SELECT id FROM items LIMIT ALL", "SELECT id FROM items LIMIT 101"),
        ("mysql", "SELECT id FROM items LIMIT 10, 500", "SELECT id FROM items LIMIT 101 OFFSET 10"),
        (
            "postgres",
            "SELECT id FROM items UNION SELECT id FROM orders",
            "(SELECT id FROM items LIMIT 101) UNION (SELECT id FROM orders LIMIT 101) LIMIT 101",
        ),
        (
            "postgres",
            "(SELECT id FROM items LIMIT 3) UNION ALL SELECT id FROM orders LIMIT 1000",
            "(SELECT id FROM items LIMIT 3) UNION ALL (SELECT id FROM orders LIMIT 101) LIMIT 101",
        ),
        (
            "sqlite",
            "SELECT id FROM items UNION SELECT id FROM orders",
            "SELECT * FROM (SELECT id FROM items LIMIT 101) UNION "
            "SELECT * FROM (SELECT id FROM orders LIMIT 101) LIMIT 101",
        ),
        (
            "postgres",
            "SELECT id FROM items INTERSECT SELECT id FROM orders",
            "SELECT id FROM items INTERSECT SELECT id FROM orders LIMIT 101",
        ),
        (
            "postgres",
            "WITH c AS (SELECT id FROM items) SELECT id FROM c",
            "WITH c AS (SELECT id FROM items) SELECT id FROM c LIMIT 101",
        ),
        ("postgres", "SELECT id FROM items -- note", "SELECT id FROM items LIMIT 101"),
        ("postgres", "EXPLAIN SELECT id FROM items", "EXPLAIN SELECT id FROM items"),
        (
            "postgres",
            "UPDATE orders SET status = 'x' WHERE id = 1",
            "UPDATE orders SET status = 'x' WHERE id = 1",
        ),
        ("mysql", "SELECT `id` FROM `items`", "SELECT `id` FROM `items` LIMIT 101"),
        ("duckdb", "SELECT id FROM items", "SELECT id FROM items LIMIT 101"),
    ],
)
def test_row_cap_rewrite(config: Config, dialect: str, query: str, expected: str) -> None:
    table = "orders" if query.startswith("UPDATE") else "items"
    outcome = run(config, query, table, dialect)
    assert outcome.allowed, outcome.block
    assert outcome.steps[0].text == expected


def test_checked_step_fields(config: Config) -> None:
    outcome = run(config, "SELECT i.id FROM items i JOIN orders o ON o.id = i.id", "items")
    (step,) = outcome.steps
    assert step.row_cap == 100 and step.readonly
    assert step.operation == "SELECT" and step.language == "sql"
    assert step.dialect == "postgres" and step.tables == ["items", "orders"]
    assert step.timeout == 20.0 and step.database == "pg"
    assert step.original == "SELECT i.id FROM items i JOIN orders o ON o.id = i.id"
    write = run(config, "DELETE FROM orders WHERE id = 3", "orders").steps[0]
    assert write.row_cap is None and write.readonly is False and write.operation == "DELETE"


def test_timeout_is_the_smaller_of_database_and_safety(config: Config) -> None:
    # duck sets query_timeout_seconds: 5 under safety's 20
    assert run(config, "SELECT id FROM items", "items", "duckdb").steps[0].timeout == 5.0
    assert run(config, "SELECT id FROM items", "items", "sqlite").steps[0].timeout == 20.0


def test_cached_ast_is_never_mutated(config: Config) -> None:
    query = "SELECT id FROM items UNION SELECT id FROM orders"
    before = parse("postgres", query).tree.sql()  # type: ignore[union-attr]
    small = load_config_text(
        CORPUS_CONFIG.replace("max_rows_per_query: 100", "max_rows_per_query: 7")
    )
    run(config, query, "items")
    assert "LIMIT 8" in run(small, query, "items").steps[0].text
    assert parse("postgres", query).tree.sql() == before  # type: ignore[union-attr]
    assert "LIMIT" not in before


def test_comments_never_reach_the_emitted_text(config: Config) -> None:
    text = run(config, "SELECT id FROM items /* x */ WHERE id = 1 -- tail", "items").steps[0].text
    assert "/*" not in text and "--" not in text
    assert sqlglot.parse_one(text, read="postgres") is not None


# --- verdicts, warnings, PARTIAL / BLOCK ---------------------------------------------------


def test_every_stage_verdict_is_recorded_with_its_policy(config: Config) -> None:
    outcome = run(config, "SELECT id FROM items WHERE id > 0 OR 1 = 1", "items")
    assert [v.stage for v in outcome.verdicts] == list(outcome.stages_passed)
    by_stage = {v.stage: v for v in outcome.verdicts}
    assert by_stage["RBAC_GATE"].policy == "permissions.default.pg.tables.items=R"
    assert by_stage["INJECTION_ANALYSER"].outcome == "warn"
    assert "safety.max_rows_per_query=100" in (by_stage["GUARDRAILS"].policy or "")
    assert outcome.warnings == ["tautology `1 = 1` under OR makes the filter match every row"]


def _federated(config: Config, steps: list[tuple[str, str, str, list[str]]]):  # type: ignore[no-untyped-def]
    inputs = [
        Step(
            step_id=sid,
            database="pg",
            table=table,
            query=query,
            depends_on=deps,
        )
        for sid, table, query, deps in steps
    ]
    return check(CheckRequest(steps=inputs), config)


STEPS = [
    ("s0", "items", "SELECT id FROM items", []),
    ("s1", "secrets", "SELECT id, token FROM secrets", []),
    ("s2", "orders", "SELECT id FROM orders", ["s1"]),
    ("s3", "orders", "SELECT user_id FROM orders", ["s2"]),
    ("s4", "orders", "SELECT status FROM orders", ["s0"]),
]


def test_partial_strips_denied_steps_and_their_dependants(config: Config) -> None:
    outcome = _federated(config, STEPS)
    assert outcome.allowed
    assert [s.step_id for s in outcome.steps] == ["s0", "s4"]
    assert sorted(outcome.stripped) == ["s1", "s2", "s3"]
    (warning,) = outcome.warnings
    assert warning.startswith(
        "step s1 stripped (deny_policy PARTIAL): Access denied: "
        "pg.secrets requires permission for SELECT"
    )
    assert "s2, s3" in warning
    assert outcome.stages_passed == [s.name for s in STAGES]


def test_block_policy_refuses_the_request(config: Config) -> None:
    strict = msgspec.structs.replace(
        config, safety=msgspec.structs.replace(config.safety, deny_policy="BLOCK")
    )
    outcome = _federated(strict, STEPS)
    assert outcome.block is not None and outcome.block.stage == "RBAC_GATE"
    assert outcome.block.step_id == "s1" and outcome.block.reason.startswith("step s1: ")
    assert outcome.steps == []


def test_partial_with_nothing_left_blocks(config: Config) -> None:
    outcome = _federated(config, [STEPS[1], STEPS[2]])
    assert outcome.block is not None and outcome.block.stage == "RBAC_GATE"


def test_other_stages_block_the_whole_federated_request(config: Config) -> None:
    outcome = _federated(config, [STEPS[0], ("s9", "items", "SELECT pg_sleep(9)", [])])
    assert outcome.block is not None and outcome.block.stage == "AST_CHECKER"
    assert outcome.block.step_id == "s9"


def test_single_step_denied_is_always_blocked(config: Config) -> None:
    outcome = run(config, "SELECT id FROM secrets", "secrets")
    assert outcome.block is not None and outcome.stripped == []


def test_each_denied_step_names_its_own_dependants(config: Config) -> None:
    outcome = _federated(
        config,
        [
            ("a", "secrets", "SELECT id FROM secrets", []),
            ("b", "orders", "SELECT id FROM orders", ["a"]),
            ("c", "secrets", "SELECT token FROM secrets", []),
            ("d", "orders", "SELECT user_id FROM orders", ["c", "e"]),
            ("e", "items", "SELECT id FROM items", []),
        ],
    )
    assert [s.step_id for s in outcome.steps] == ["e"]
    assert outcome.warnings[0].endswith("depend on it: b")
    assert outcome.warnings[1].endswith("depend on it: d")
    assert sorted(outcome.stripped) == ["a", "b", "c", "d"]


def test_unanalysable_sql_is_refused_not_crashed(config: Config) -> None:
    deep = "SELECT " + "(" * 3000 + "1" + ")" * 3000
    outcome = run(config, deep, "items")
    assert outcome.block is not None and outcome.block.stage == "AST_CHECKER"
    assert outcome.steps == []

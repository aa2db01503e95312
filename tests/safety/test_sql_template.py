"""Statement templates (safety/languages/sql_template.py): a text that shares a template with
a checked one gets exactly the verdict and the rewrite a full check would give it.

The corpora are replayed with their literals changed, once after the original text taught
its template and once with no template at all: block, stage, reason, warnings and the text
that runs must be the same. Hostile cases are attacked the same way.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import sqlglot
from sqlglot import TokenType

from engine.config import Config
from safety.languages import sql_template
from safety.types import SafetyOutcome
from tests.safety.conftest import expand, load_corpus, run

SQL_ENTRIES = [
    p
    for p in expand(load_corpus("hostile_sql.yaml") + load_corpus("benign_sql.yaml"))
    if p.values[1] != "mql"
]
HOWS = ("int", "string")


@pytest.fixture(autouse=True)
def no_templates() -> Any:
    sql_template.clear()
    yield
    sql_template.clear()


def teach(config: Config, query: str, table: str, dialect: str = "postgres") -> SafetyOutcome:
    """Check `query` twice: a shape is learned the second time it is seen."""
    run(config, query, table, dialect)
    return run(config, query, table, dialect)


def variant(query: str, dialect: str, how: str) -> str | None:
    """`query` with each int (or string) literal changed, each by a different amount, so a
    pair like `1 = 1` stops being equal; None when it has none."""
    try:
        tokens = sqlglot.tokenize(query, read=dialect)
    except sqlglot.errors.SqlglotError:
        return None
    out, at, n = [], 0, 0
    for tok in tokens:
        src = query[tok.start : tok.end + 1]
        if how == "int" and tok.token_type is TokenType.NUMBER and src.isdigit():
            new = str(int(src) + 1 + n)
        elif how == "string" and tok.token_type is TokenType.STRING and src[0] == "'":
            new = src[:-1] + "z" * (n + 1) + "'"
        else:
            continue
        out += [query[at : tok.start], new]
        at = tok.end + 1
        n += 1
    if not n:
        return None
    return "".join(out) + query[at:]


def summary(outcome: SafetyOutcome) -> dict[str, Any]:
    """Everything a client or the connector sees of a verdict."""
    return {
        "block": None
        if outcome.block is None
        else (outcome.block.stage, outcome.block.reason, outcome.block.suggestion),
        "stages": outcome.stages_passed,
        "warnings": outcome.warnings,
        "verdicts": [(v.stage, v.outcome, v.reason, v.policy) for v in outcome.verdicts],
        "steps": [
            (s.text, s.link_text, s.row_cap, s.operation, s.tables, s.readonly)
            for s in outcome.steps
        ],
    }


@pytest.mark.parametrize(("entry", "dialect"), SQL_ENTRIES)
@pytest.mark.parametrize("how", HOWS)
def test_changed_literals_get_the_verdict_of_a_full_check(
    config: Config, entry: dict[str, Any], dialect: str, how: str
) -> None:
    query, table = entry["query"], entry["table"]
    other = variant(query, dialect, how)
    if other is None:
        return
    sql_template.clear()
    expected = summary(run(config, other, table, dialect))  # no template: a full check
    sql_template.clear()
    teach(config, query, table, dialect)  # the original's template, if it has one
    assert summary(run(config, other, table, dialect)) == expected, (query, other)


def test_the_corpus_replay_reuses_templates(config: Config) -> None:
    """The replay above is not vacuous: many variants run through a template, and no
    hostile variant does."""
    hits = blocked_hits = 0
    for (entry, dialect), how in itertools.product((p.values for p in SQL_ENTRIES), HOWS):
        other = variant(entry["query"], dialect, how)
        if other is None:
            continue
        sql_template.clear()
        teach(config, entry["query"], entry["table"], dialect)
        if sql_template.match(dialect, other) is not None:
            hits += 1
            blocked_hits += "expect_stage" in entry
    assert hits >= 60, hits
    assert blocked_hits == 0


def hit_of(dialect: str, query: str) -> sql_template.Hit | None:
    return sql_template.match(dialect, query)


def test_a_verdict_changing_literal_gets_its_own_verdict(config: Config) -> None:
    """Same template shape; the tautology's literals decide the warning, so they are pinned."""
    first = "SELECT id FROM items WHERE id = 5 OR 1 = 2"
    second = "SELECT id FROM items WHERE id = 6 OR 1 = 1"
    assert (
        sql_template._shape_of("postgres", first)[0]
        == sql_template._shape_of("postgres", second)[0]
    )
    clean = teach(config, first, "items")
    assert clean.block is None and clean.warnings == []
    assert hit_of("postgres", first) is not None  # learned
    warned = run(config, second, "items")
    assert warned.block is None
    assert any("tautology `1 = 1`" in w for w in warned.warnings), warned.warnings
    # and the inert key literal does share the template
    again = run(config, "SELECT id FROM items WHERE id = 7 OR 1 = 2", "items")
    assert again.warnings == [] and again.steps[0].run_text is not None


def test_a_limit_is_checked_per_request(config: Config) -> None:
    """LIMIT is read by GUARDRAILS (the cap is 100 here): its value is never a slot."""
    small = teach(config, "SELECT id FROM items WHERE id > 5 LIMIT 50", "items")
    big = run(config, "SELECT id FROM items WHERE id > 6 LIMIT 5000", "items")
    assert small.steps[0].text == "SELECT id FROM items WHERE id > 5 LIMIT 50"
    assert big.steps[0].text == "SELECT id FROM items WHERE id > 6 LIMIT 101"
    same = run(config, "SELECT id FROM items WHERE id > 9 LIMIT 50", "items")
    assert same.steps[0].text == "SELECT id FROM items WHERE id > 9 LIMIT 50"
    assert same.steps[0].run_text == "SELECT id FROM items WHERE id > $1::int4 LIMIT 50"
    assert same.steps[0].params == (9,)


def test_a_function_argument_is_checked_per_request(config: Config) -> None:
    """A file-reading function's argument is never a slot: each text is refused on its own,
    and a harmless call with the same shape does not open a template for a hostile one."""
    ok = teach(config, "SELECT id FROM items WHERE id = 1 AND length('abc') = 3", "items")
    assert ok.block is None
    bad = run(config, "SELECT pg_read_file('/etc/passwd') FROM items WHERE id = 2", "items")
    assert bad.block is not None
    again = run(config, "SELECT pg_read_file('/etc/shadow') FROM items WHERE id = 3", "items")
    assert again.block is not None and again.block.stage == bad.block.stage


def test_postgres_binds_inert_integers_and_strings(config: Config) -> None:
    teach(
        config,
        "/* panel 3 */ SELECT id FROM items WHERE id IN (1, 3000000000) AND name = 'a'",
        "items",
    )
    got = run(
        config,
        "/* panel 3 */ SELECT id FROM items WHERE id IN (3, 4000000000) AND name = 'b'",
        "items",
    )
    step = got.steps[0]
    assert step.text == "SELECT id FROM items WHERE id IN (3, 4000000000) AND name = 'b' LIMIT 101"
    assert step.run_text == (
        "SELECT id FROM items WHERE id IN ($1::int4, $2::int8) AND name = $3 LIMIT 101"
    )
    assert step.params == (3, 4000000000, "b")
    # other dialects reuse the template but run the rendered text
    teach(config, "SELECT id FROM items WHERE id = 1", "items", "mysql")
    my = run(config, "SELECT id FROM items WHERE id = 2", "items", "mysql").steps[0]
    assert my.text == my.run_text == "SELECT id FROM items WHERE id = 2 LIMIT 101"
    assert my.params == ()


def test_a_different_comment_is_a_different_template(config: Config) -> None:
    teach(config, "SELECT id FROM items WHERE id = 1 -- a", "items")
    assert hit_of("postgres", "SELECT id FROM items WHERE id = 2 -- a") is not None
    assert hit_of("postgres", "SELECT id FROM items WHERE id = 2 -- b") is None
    assert hit_of("postgres", "select id FROM items WHERE id = 2 -- a") is None


def test_texts_with_their_own_parameters_get_no_template(config: Config) -> None:
    teach(config, "SELECT id FROM items WHERE id = $1", "items")
    assert hit_of("postgres", "SELECT id FROM items WHERE id = $1") is None


def test_a_one_off_text_is_not_learned(config: Config) -> None:
    """Learning costs a second analysis: only a shape seen twice pays it."""
    run(config, "SELECT id FROM items WHERE id = 1", "items")
    assert hit_of("postgres", "SELECT id FROM items WHERE id = 2") is None
    run(config, "SELECT id FROM items WHERE id = 3", "items")
    assert hit_of("postgres", "SELECT id FROM items WHERE id = 2") is not None


def test_the_cache_is_bounded(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_template, "TEMPLATE_KEYS", 8)
    for i in range(20):
        run(config, f"SELECT id FROM items WHERE id = 1 AND id + {i} > 0", "items")
    assert len(sql_template._shapes) <= 8


def test_a_verdict_changing_string_literal_gets_its_own_verdict(config: Config) -> None:
    """One template shape, two texts: the string key is inert and bound, the strings of the
    tautology are pinned, so the text whose strings are equal is checked on its own."""
    clean_text = "SELECT id FROM items WHERE name = 'a' OR 'x' = 'y'"
    hostile_text = "SELECT id FROM items WHERE name = 'b' OR 'x' = 'x'"
    assert (
        sql_template._shape_of("postgres", clean_text)[0]
        == sql_template._shape_of("postgres", hostile_text)[0]
    )
    clean = teach(config, clean_text, "items")
    assert clean.block is None and clean.warnings == []
    assert hit_of("postgres", clean_text) is not None  # learned
    hostile = run(config, hostile_text, "items")
    assert summary(hostile) != summary(clean)
    assert hostile.warnings or hostile.block is not None
    sql_template.clear()
    assert summary(run(config, hostile_text, "items")) == summary(hostile)  # as a full check
    # another key of the clean text's template runs bound
    again = run(config, "SELECT id FROM items WHERE name = 'c' OR 'x' = 'y'", "items")
    assert again.warnings == [] and again.block is None


def test_a_string_key_binds_only_when_plain(config: Config) -> None:
    """Only a string whose value is its quoted source is bound; a backslash (its meaning
    depends on standard_conforming_strings) keeps the literal inline."""
    teach(config, "SELECT id FROM items WHERE name = 'a'", "items")
    quoted = run(config, "SELECT id FROM items WHERE name = 'it''s'", "items").steps[0]
    assert quoted.run_text == "SELECT id FROM items WHERE name = $1 LIMIT 101"
    assert quoted.params == ("it's",)
    slashed = run(config, "SELECT id FROM items WHERE name = 'a\\b'", "items").steps[0]
    assert slashed.params == ()
    assert slashed.run_text == slashed.text

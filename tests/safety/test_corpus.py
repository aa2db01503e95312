"""The SQL corpora: every hostile query blocked by exactly its stage, every benign one
passing (warnings allowed) in each dialect it lists."""

from __future__ import annotations

from typing import Any

import pytest

from engine.config import Config
from tests.safety.conftest import expand, load_corpus, run

HOSTILE = load_corpus("hostile_sql.yaml")
BENIGN = load_corpus("benign_sql.yaml")


def test_corpus_sizes() -> None:
    assert len({e["query"] for e in HOSTILE}) >= 150
    assert sum(len(e["dialects"]) for e in HOSTILE) >= 300
    assert len({e["query"] for e in BENIGN}) >= 100
    for entry in HOSTILE + BENIGN:
        assert set(entry) >= {"dialects", "query", "table", "note"}, entry


@pytest.mark.parametrize(("entry", "dialect"), expand(HOSTILE))
def test_hostile_is_blocked_by_its_stage(
    config: Config, entry: dict[str, Any], dialect: str
) -> None:
    outcome = run(config, entry["query"], entry["table"], dialect)
    assert outcome.block is not None, (entry, outcome.steps)
    assert outcome.block.stage == entry["expect_stage"], (entry["note"], outcome.block)
    assert outcome.steps == []
    assert outcome.block.reason
    assert outcome.verdicts[-1].outcome == "block"
    assert outcome.verdicts[-1].stage == entry["expect_stage"]


@pytest.mark.parametrize(("entry", "dialect"), expand(BENIGN))
def test_benign_passes(config: Config, entry: dict[str, Any], dialect: str) -> None:
    outcome = run(config, entry["query"], entry["table"], dialect)
    assert outcome.block is None, (entry, outcome.block)
    assert len(outcome.stages_passed) == 5
    assert len(outcome.steps) == 1
    for expected in entry.get("expect_warnings", []):
        assert any(expected in w for w in outcome.warnings), (expected, outcome.warnings)
    if not entry.get("expect_warnings"):
        assert outcome.warnings == [], outcome.warnings

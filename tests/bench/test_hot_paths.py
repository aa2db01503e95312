"""The hot-path changes the benchmark's profiles led to keep their meaning (timings are
measured in bench/, never asserted here)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from connectors.base import LinkFilter, Statement
from connectors.sql_link import apply_link
from engine.config import Config, load_config_text
from safety.audit import AuditLog, _may_hold_secret, redact, secret_values

LINK = LinkFilter("id", [3, 1, 2], "BIGINT")
CAP_FETCH = 20_000_001  # the guardrails' row cap + 1, as Statement.max_rows carries it


@pytest.mark.parametrize(
    ("dialect", "style", "expected"),
    [
        (
            "mysql",
            "format",
            "SELECT id, status FROM orders WHERE id IN (%s, %s, %s) LIMIT 20000001",
        ),
        (
            "postgres",
            "dollar",
            "SELECT id, status FROM orders WHERE id = ANY(CAST($1 AS BIGINT[])) LIMIT 20000001",
        ),
    ],
)
def test_the_guardrail_cap_keeps_the_link_filter_inside(
    dialect: str, style: str, expected: str
) -> None:
    # the filter goes under the cap: wrapping made the database read up to the cap of
    # unfiltered rows for each batch of link values
    st = Statement(text="SELECT id, status FROM orders LIMIT 20000001", max_rows=CAP_FETCH)
    got = apply_link(st, LINK, dialect=dialect, param_style=style)
    assert got.text == expected
    assert got.max_rows == CAP_FETCH


def test_a_client_limit_is_still_wrapped() -> None:
    # a LIMIT the client wrote limits the unfiltered rows, as written
    st = Statement(text="SELECT id, status FROM orders LIMIT 10", max_rows=CAP_FETCH)
    got = apply_link(st, LINK, dialect="mysql", param_style="format")
    assert got.text == (
        "SELECT * FROM (SELECT id, status FROM orders LIMIT 10) AS _sluice_link"
        " WHERE _sluice_link.id IN (%s, %s, %s)"
    )


def test_a_limit_without_a_known_cap_is_wrapped() -> None:
    st = Statement(text="SELECT id, status FROM orders LIMIT 20000001")
    got = apply_link(st, LINK, dialect="mysql", param_style="format")
    assert got.text.startswith("SELECT * FROM (SELECT id, status FROM orders LIMIT 20000001)")


ENTRIES = [
    {"query": "SELECT * FROM users WHERE id = 5", "verdicts": [{"outcome": "pass"}]},
    {"query": "SELECT 1", "note": "passwd: x, pwd=y"},
    {"query": "SELECT 'hunter22' AS x", "n": 1.5, "none": None},
    {"query": "SELECT * FROM t WHERE note = 'password=abc'"},
    {"dsn": "postgresql://u:pw@h/db", "headers": {"Authorization": "Bearer abc.def"}},
    {"nested": [{"token": "t0k3n"}, {"api_key": "k"}], "ok": "plain"},
]


def _encoded(tmp_path: Path, config: Config, entry: dict) -> bytes:
    log = AuditLog(tmp_path / "audit.jsonl", config=config)
    try:
        return log._encode(entry)
    finally:
        log.close()


@pytest.mark.parametrize("entry", ENTRIES)
def test_audit_fast_encoding_matches_full_redaction(tmp_path: Path, entry: dict) -> None:
    config = load_config_text(
        "databases:\n  - {name: pg, type: postgresql, host: h, password: hunter22}\n"
    )
    expected = msgspec.json.encode(redact(entry, secret_values(config))) + b"\n"
    got = _encoded(tmp_path, config, entry)
    assert got == expected
    assert b"hunter22" not in got


def test_a_plain_entry_takes_the_fast_path(tmp_path: Path) -> None:
    config = load_config_text("databases:\n  - {name: pg, type: postgresql, host: h}\n")
    entry = ENTRIES[0]
    assert not _may_hold_secret(msgspec.json.encode(entry))
    assert _encoded(tmp_path, config, entry) == msgspec.json.encode(entry) + b"\n"


def test_audit_secret_that_json_escapes_takes_the_full_path(tmp_path: Path) -> None:
    config = load_config_text(
        'databases:\n  - {name: pg, type: postgresql, host: h, password: "a\\"b\\\\c"}\n'
    )
    entry = {"query": "SELECT 'a\"b\\c'"}
    assert b"***" in _encoded(tmp_path, config, entry)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"q":"PassWord=x"}',
        b'{"PWD":1}',
        b'{"q":"my SECRET"}',
        b'{"Token":"t"}',
        b'{"q":"API_KEY=1"}',
        b'{"q":"Api-Key: 1"}',
        b'{"q":"apiKEY"}',
        b'{"q":"postgres://u:p@h/db"}',
        b'{"q":"Bearer abc"}',
        b'{"Authorization":"x"}',
    ],
)
def test_every_trigger_sends_an_entry_to_full_redaction_in_any_case(raw: bytes) -> None:
    assert _may_hold_secret(raw)


def test_an_entry_without_a_trigger_is_not_redacted() -> None:
    assert not _may_hold_secret(b'{"query":"SELECT id FROM users WHERE id = 4711","api":"key"}')

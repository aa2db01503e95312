"""The audit log: written off the event loop, never blocking, drops counted and reported,
flushed on shutdown, secrets redacted, and printed readably by `tail`."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import anyio
import pytest

from engine.config import load_config_text
from safety.audit import (
    ON_LOOP_QUERY_CHARS,
    AuditEntry,
    AuditLog,
    AuditStep,
    format_entry,
    redact,
    secret_values,
    tail,
)

CONFIG = load_config_text("""
databases:
  - {name: pg, type: postgresql, host: 127.0.0.1, password: "pg-s3cret-pw"}
  - {name: dsn, type: postgresql, dsn: "postgresql://app:dsn-pass-42@db.example/shop"}
auth:
  tokens:
    - {principal: agent, token: tok-abcdef-123456}
""")


def _entry(i: int, query: str = "SELECT 1") -> dict[str, object]:
    return {
        "request_id": f"req_{i:012x}",
        "ts": time.time(),
        "principal": "agent",
        "transport": "rest/local",
        "steps": [
            {"step_id": None, "database": "pg", "table": "items", "language": "sql", "query": query}
        ],
        "blocked": None,
        "warnings": [],
    }


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_entries_are_written_and_flushed_on_cancel(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    audit = AuditLog(path, config=CONFIG)
    async with anyio.create_task_group() as tg:
        await tg.start(audit.serve)
        for i in range(250):
            audit.record(_entry(i))
        tg.cancel_scope.cancel()  # shutdown: everything queued is still written
    lines = _lines(path)
    assert [e["request_id"] for e in lines] == [f"req_{i:012x}" for i in range(250)]


async def test_an_entry_the_writer_woke_for_survives_a_cancel_during_its_linger(
    tmp_path: Path,
) -> None:
    audit = AuditLog(tmp_path / "a.jsonl", linger=5.0)  # the writer holds it while lingering
    async with anyio.create_task_group() as tg:
        await tg.start(audit.serve)
        audit.record(_entry(1))
        await anyio.sleep(0.1)  # the writer has taken it off the queue and lingers
        tg.cancel_scope.cancel()
    assert [e["request_id"] for e in _lines(tmp_path / "a.jsonl")] == [f"req_{1:012x}"]


async def test_close_ends_the_writer(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl")
    async with anyio.create_task_group() as tg:
        await tg.start(audit.serve)
        audit.record(_entry(1))
        audit.close()
    assert len(_lines(tmp_path / "a.jsonl")) == 1
    audit.record(_entry(2))  # after close: counted, never raised
    assert audit.dropped == 1


async def test_full_queue_drops_are_counted_and_reported(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl", max_pending=3)
    for i in range(10):  # writer not started yet: the queue holds 3
        audit.record(_entry(i))
    assert audit.dropped == 7
    async with anyio.create_task_group() as tg:
        await tg.start(audit.serve)
        tg.cancel_scope.cancel()
    lines = _lines(tmp_path / "a.jsonl")
    assert lines[0]["event"] == "audit_dropped" and lines[0]["dropped"] == 7
    assert [e["request_id"] for e in lines[1:]] == [f"req_{i:012x}" for i in range(3)]


async def test_record_never_blocks_the_loop_while_the_disk_is_slow(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl", max_pending=100)
    gate = threading.Event()
    original = audit._write

    def slow_write(fh, lines):  # type: ignore[no-untyped-def]
        gate.wait(5)
        original(fh, lines)

    audit._write = slow_write  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        await tg.start(audit.serve)
        started = time.perf_counter()
        for i in range(1000):
            audit.record(_entry(i))
        elapsed = time.perf_counter() - started
        gate.set()
        tg.cancel_scope.cancel()
    assert elapsed < 0.5
    assert audit.dropped > 0
    lines = _lines(tmp_path / "a.jsonl")
    assert any(e.get("event") == "audit_dropped" for e in lines)
    assert len(lines) - 1 + audit.dropped >= 1000 - 1


async def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    audit = AuditLog(path, config=CONFIG)
    async with anyio.create_task_group() as tg:
        await tg.start(audit.serve)
        audit.record(_entry(1, "SELECT 'pg-s3cret-pw', 'tok-abcdef-123456'"))
        audit.record(
            {
                "error": "connect postgresql://app:dsn-pass-42@db.example/shop failed",
                "headers": {"authorization": "Bearer tok-abcdef-123456"},
                "dsn": "host=db password=hunter2 user=x",
                "password": "zzz-top",
            }
        )
        tg.cancel_scope.cancel()
    text = path.read_text()
    for secret in ("pg-s3cret-pw", "tok-abcdef-123456", "dsn-pass-42", "hunter2", "zzz-top"):
        assert secret not in text, secret
    assert "postgresql://app:***@db.example/shop" in text
    assert "password=***" in text


def test_redact_helpers() -> None:
    secrets = secret_values(CONFIG)
    assert set(secrets) == {"pg-s3cret-pw", "dsn-pass-42", "tok-abcdef-123456"}
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact("mysql://root:pw@h:3306/db") == "mysql://root:***@h:3306/db"
    assert redact({"nested": ["password='x y'"]}) == {"nested": ["password=***"]}
    assert redact(42) == 42


def test_tail_prints_readably(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    blocked = _entry(2, "SELECT * FROM secrets")
    blocked["blocked"] = {"stage": "RBAC_GATE", "reason": "Access denied: pg.secrets"}
    lines = [
        _entry(1, "SELECT id\n  FROM items"),
        blocked,
        {
            "event": "audit_dropped",
            "ts": time.time(),
            "dropped": 3,
            "message": "3 audit entries were dropped",
        },
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in lines) + "not json\n")
    out = io.StringIO()
    tail(path, follow=False, out=out)
    text = out.getvalue()
    assert "req_000000000001  agent  rest/local  ok" in text
    assert "pg.items (sql): SELECT id FROM items" in text
    assert "BLOCKED RBAC_GATE: Access denied: pg.secrets" in text
    assert "!! 3 audit entries were dropped" in text
    assert text.rstrip().endswith("not json")
    assert format_entry({"ts": None}).startswith("-")


def test_tail_follow_prints_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(_entry(1)) + "\n")
    out = io.StringIO()

    class Stop(Exception):
        pass

    class Out(io.StringIO):
        def write(self, s: str) -> int:
            n = out.write(s)
            if "req_000000000002" in out.getvalue():
                raise Stop
            return n

    def writer() -> None:
        time.sleep(0.2)
        with path.open("a") as fh:
            fh.write(json.dumps(_entry(2)))
            fh.flush()
            time.sleep(0.1)
            fh.write("\n")

    t = threading.Thread(target=writer)
    t.start()
    try:
        tail(path, follow=True, out=Out(), poll_seconds=0.02)
    except Stop:
        pass
    t.join()
    assert "req_000000000001" in out.getvalue() and "req_000000000002" in out.getvalue()


async def test_odd_values_never_stop_the_writer(tmp_path: Path) -> None:
    from decimal import Decimal

    class Opaque:
        def __str__(self) -> str:
            return "opaque-thing"

    path = tmp_path / "a.jsonl"
    audit = AuditLog(path)
    async with anyio.create_task_group() as tg:
        await tg.start(audit.serve)
        audit.record({"rows": Decimal("1.50"), "obj": Opaque(), "set": {1, 2}})
        audit.record({"bad": float("nan"), 1: "int key"})
        audit.record(_entry(3))
        tg.cancel_scope.cancel()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["obj"] == "opaque-thing"
    assert json.loads(lines[-1])["request_id"] == "req_000000000003"
    assert len(lines) == 3


def _request_entry(query: str) -> AuditEntry:
    step = AuditStep(
        step_id=None, database="pg", table="items", language="sql", query=query, rewritten=query
    )
    return AuditEntry(
        request_id="req_000000000001",
        ts=time.time(),
        principal="agent",
        transport="rest/local",
        client="127.0.0.1",
        steps=[step],
        verdicts=[],
        blocked=None,
        warnings=[],
    )


@pytest.mark.parametrize("pad", [0, ON_LOOP_QUERY_CHARS], ids=["encoded-in-record", "in-thread"])
async def test_request_entries_are_redacted_whichever_side_encodes_them(
    tmp_path: Path, pad: int
) -> None:
    path = tmp_path / "a.jsonl"
    audit = AuditLog(path, config=CONFIG)
    filler = " " * pad
    async with anyio.create_task_group() as tg:
        await tg.start(audit.serve)
        audit.record(_request_entry(f"SELECT 'pg-s3cret-pw'{filler}"))
        audit.record(_request_entry(f"SELECT 'postgresql://u:dsn-pass-42@h/db'{filler}"))
        audit.record(_request_entry(f"SELECT 42{filler}"))
        tg.cancel_scope.cancel()
    lines = _lines(path)
    text = path.read_text()
    assert len(lines) == 3
    assert "pg-s3cret-pw" not in text and "dsn-pass-42" not in text
    assert lines[2]["steps"][0]["query"] == f"SELECT 42{filler}"  # type: ignore[index]

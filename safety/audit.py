"""The audit log: one JSON line per request, written off the event loop.

    audit = AuditLog(path, config=config)
    async with anyio.create_task_group() as tg:
        await tg.start(audit.serve)       # ready before the first request
        audit.record({...})               # never blocks; a full queue counts a drop

`record()` puts the entry on a bounded queue; `serve()` batches what is waiting and
writes it through `anyio.to_thread`, so a slow disk never stalls a request. A small entry
that holds nothing to redact is encoded in `record()` (~10 us): the writer thread then only
writes, and does not hold the GIL against the event loop while it encodes. When the queue is
full the entry is dropped and counted, and the next line written says how many were lost.
On shutdown (cancellation or `close()`) every queued entry is written and the file flushed:
no entry accepted by `record()` is ever lost; a drop is counted (`on_drop`, a metric).
Secrets never reach the file: `redact()` scrubs `password=...`, URL credentials
(`postgresql://user:pass@`), bearer tokens and every secret value found in the config.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

import anyio
import msgspec
from anyio.abc import TaskStatus

from safety.types import StageName, StageVerdict

_KEY_VALUE = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s&;,]+)"
)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^:/@\s]*):[^@\s/]*@")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+")
# a string none of the three patterns can match skips them: one scan instead of three
# substitutions (redacting a simple query's entry took ~180 us, on the event loop)
_MAY_HOLD_SECRET = re.compile(r"(?i)passw|pwd|secret|token|api[_-]?key|://|bearer")
# the same triggers over an encoded entry, plus the secret key names redact() masks. Matched
# against the lowercased bytes after plain substring checks: a case-insensitive regex took
# ~0.6 ms over the 8 KB entry of a 384-float vector search (a tenth of the whole request)
_TRIGGERS_JSON = (b"passw", b"pwd", b"secret", b"token", b"api", b"://", b"bearer", b"author")
_MAY_HOLD_SECRET_JSON = re.compile(rb"passw|pwd|secret|token|api[_-]?key|://|bearer|authorization")
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
_SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "authorization",
        "token_sha256",
        "api_key",
        "apikey",
    }
)
MASK = "***"


def _fallback(value: Any) -> Any:
    return str(value)  # anything msgspec cannot encode is logged as its text


_ENCODER = msgspec.json.Encoder(enc_hook=_fallback, decimal_format="number")


class AuditStep(msgspec.Struct, kw_only=True):
    """One step of an audited request: what was asked and the text that was to run."""

    step_id: str | None
    database: str
    table: str
    language: str | None
    query: str
    rewritten: str | None


class AuditBlock(msgspec.Struct, kw_only=True):
    stage: StageName
    reason: str


class AuditEntry(msgspec.Struct, kw_only=True):
    """One audit line per request. The verdicts are known before anything runs; the fields
    left UNSET (not written) are filled in as the request finishes: `rows` (and
    `rows_affected` for a write, `steps_meta` for a federated request), `error` when it
    failed, and `latency_ms` always."""

    request_id: str
    ts: float
    principal: str | None
    transport: str
    client: str | None
    steps: list[AuditStep]
    verdicts: list[StageVerdict]
    blocked: AuditBlock | None
    warnings: list[str]
    rows: int | None | msgspec.UnsetType = msgspec.UNSET
    rows_affected: int | None | msgspec.UnsetType = msgspec.UNSET
    steps_meta: list[Any] | msgspec.UnsetType = msgspec.UNSET
    error: str | msgspec.UnsetType = msgspec.UNSET
    latency_ms: float | msgspec.UnsetType = msgspec.UNSET


# an entry, or one of the log's own notices (audit_dropped, audit_unencodable)
Entry = AuditEntry | dict[str, Any]
# Queries up to this many characters in all are encoded and checked in record(); a larger
# entry (a big body) is left whole to the writer thread, off the event loop.
ON_LOOP_QUERY_CHARS = 4096


class HasSecrets(Protocol):
    def secrets(self) -> tuple[str, ...]:
        """Every secret value written in the configuration (engine.config.Config)."""
        ...


def secret_values(config: HasSecrets | None) -> tuple[str, ...]:
    """Every secret written in the config (database and DSN passwords, bearer tokens)."""
    if config is None:
        return ()
    found = set(config.secrets())
    # longest first, so a secret that contains another is masked whole
    return tuple(sorted((s for s in found if len(s) >= 3), key=len, reverse=True))


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A copy of `value` (str, dict, list...) with secrets masked; other types unchanged."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        if _MAY_HOLD_SECRET.search(value) is None:
            return value
        value = _URL_CREDENTIALS.sub(rf"\1:{MASK}@", value)
        value = _KEY_VALUE.sub(rf"\1\2{MASK}", value)
        return _BEARER.sub(f"Bearer {MASK}", value)
    if isinstance(value, dict):
        return {
            k: MASK
            if isinstance(k, str) and k.lower() in _SECRET_KEYS and v
            else redact(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value


def _may_hold_secret(raw: bytes) -> bool:
    """Whether an encoded entry holds a trigger of redact() (so it must take the slow path)."""
    low = raw.lower()
    return any(t in low for t in _TRIGGERS_JSON) and _MAY_HOLD_SECRET_JSON.search(low) is not None


class AuditLog:
    """JSON-lines audit writer (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        config: HasSecrets | None = None,
        max_pending: int = 10_000,
        batch: int = 512,
        linger: float = 0.01,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.dropped = 0  # total entries lost to a full queue
        self._unreported = 0
        self._batch = batch
        self._on_drop = on_drop
        # after the first entry, wait this long for more: one worker-thread hop per batch
        # rather than per request (the hop and its GIL handoff were ~10% of a lookup's
        # samples at low concurrency, bench/dashboard.py)
        self._linger = linger
        self._secrets = secret_values(config)
        # secrets as they appear in encoded JSON; one that JSON escapes cannot be searched
        # for in the encoded bytes, so its presence disables the fast path
        self._secret_bytes = tuple(s.encode() for s in self._secrets)
        self._fast = not any(_JSON_ESCAPED.search(s) for s in self._secrets)
        # A deque, not a memory stream: an entry leaves it only in a synchronous take, so a
        # cancelled writer can never hold one it has not written (a stream's receive() can be
        # cancelled after the item was handed over, losing it).
        self._pending: deque[Entry | bytes] = deque()  # bytes: a line ready to write
        self._max_pending = max_pending
        self._wake: anyio.Event | None = None  # made in serve(): an Event needs the loop
        self._closed = False

    def record(self, entry: Entry) -> None:
        """Queue one entry; never blocks (a full or closed queue counts a drop)."""
        if self._closed or len(self._pending) >= self._max_pending:
            self.dropped += 1
            self._unreported += 1
            if self._on_drop is not None:
                self._on_drop(1)
            return
        self._pending.append(self._ready(entry))
        if self._wake is not None:
            self._wake.set()

    def _ready(self, entry: Entry) -> Entry | bytes:
        """The entry's line, when it is small and holds nothing to redact; else the entry,
        for the writer thread to encode and redact. The py-spy profile of a lookup showed
        the writer thread encoding batches while the event loop waited for the GIL: 0.3 ms
        of a lookup's p99 at one client (bench/results/dashboard.md)."""
        if (
            isinstance(entry, AuditEntry)
            and sum(len(s.query) + len(s.rewritten or "") for s in entry.steps)
            > ON_LOOP_QUERY_CHARS
        ):
            return entry
        try:
            line = self._plain_line(entry)
        except (TypeError, ValueError, msgspec.EncodeError):
            return entry  # the writer turns it into an audit_unencodable notice
        return entry if line is None else line

    def close(self) -> None:
        """Stop accepting entries; `serve()` writes what is queued and returns."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write queued entries until closed or cancelled, then write the rest."""
        fh = await anyio.to_thread.run_sync(self._open)
        self._wake = anyio.Event()
        task_status.started()
        try:
            while not (self._closed and not self._pending):
                if not self._pending:
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                if self._linger and not self._closed and len(self._pending) < self._batch:
                    # entries stay queued while lingering: a cancel here loses none
                    await anyio.sleep(self._linger)
                # encoding and redaction run in the worker thread too, never on the loop;
                # shielded: a batch once taken is always written (a cancelled to_thread
                # call would return before running it)
                batch = self._take()
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._write, fh, batch)
        finally:
            # the writer is going: later record() calls count as drops
            self._closed = True
            with anyio.CancelScope(shield=True):
                rest: list[Entry | bytes] = []
                while self._pending or self._unreported:
                    rest.extend(self._take())
                await anyio.to_thread.run_sync(self._finish, fh, rest)

    def _take(self) -> list[Entry | bytes]:
        batch: list[Entry | bytes] = []
        if self._unreported:
            batch.append(
                {
                    "ts": time.time(),
                    "event": "audit_dropped",
                    "dropped": self._unreported,
                    "message": f"{self._unreported} audit entries were dropped: the writer "
                    "queue was full",
                }
            )
            self._unreported = 0
        while self._pending and len(batch) < self._batch:
            batch.append(self._pending.popleft())
        return batch

    def _encode(self, entry: Entry | bytes) -> bytes:
        if isinstance(entry, bytes):
            return entry
        try:
            return self._encode_redacted(entry)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            # one odd entry must never stop the writer (and with it the server)
            notice = {
                "ts": time.time(),
                "event": "audit_unencodable",
                "message": f"an audit entry could not be encoded: {exc}",
            }
            return _ENCODER.encode(notice) + b"\n"

    def _plain_line(self, entry: Entry) -> bytes | None:
        """The entry's line when it holds nothing to redact, else None. Most entries hold
        nothing: encode once and search the bytes, instead of walking every value (redact()
        cost ~60 us per simple query)."""
        if not self._fast:
            return None
        raw = _ENCODER.encode(entry)
        if _may_hold_secret(raw) or any(s in raw for s in self._secret_bytes):
            return None
        return raw + b"\n"

    def _encode_redacted(self, entry: Entry) -> bytes:
        line = self._plain_line(entry)
        if line is not None:
            return line
        plain = msgspec.to_builtins(entry) if isinstance(entry, AuditEntry) else entry
        return _ENCODER.encode(redact(plain, self._secrets)) + b"\n"

    def _open(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("ab")

    def _write(self, fh: IO[bytes], entries: list[Entry | bytes]) -> None:
        fh.write(b"".join(self._encode(entry) for entry in entries))
        fh.flush()

    def _finish(self, fh: IO[bytes], entries: list[Entry | bytes]) -> None:
        try:
            if entries:
                fh.write(b"".join(self._encode(entry) for entry in entries))
            fh.flush()
        finally:
            fh.close()


def format_entry(entry: dict[str, Any]) -> str:
    """One audit entry as a readable line (the `sluice audit tail` format)."""
    ts = entry.get("ts")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
        if isinstance(ts, int | float) and math.isfinite(ts)
        else "-"
    )
    if entry.get("event") == "audit_dropped":
        return f"{when}  !! {entry.get('message')}"
    who = entry.get("principal") or "-"
    blocked = entry.get("blocked")
    if blocked:
        status = f"BLOCKED {blocked.get('stage')}: {blocked.get('reason')}"
    elif entry.get("error"):
        status = f"ERROR {entry['error']}"
    else:
        rows = entry.get("rows")
        status = "ok" + (f" rows={rows}" if rows is not None else "")
    latency = entry.get("latency_ms")
    head = (
        f"{when}  {entry.get('request_id', '-')}  {who}  {entry.get('transport', '-')}  "
        f"{status}" + (f"  {latency}ms" if latency is not None else "")
    )
    lines = [head]
    for step in entry.get("steps") or []:
        target = f"{step.get('database')}.{step.get('table')}"
        sid = f"[{step['step_id']}] " if step.get("step_id") else ""
        query = " ".join(str(step.get("query", "")).split())
        lines.append(f"    {sid}{target} ({step.get('language')}): {query}")
    lines += [f"    warning: {warning}" for warning in entry.get("warnings") or []]
    return "\n".join(lines)


def tail(
    path: str | os.PathLike[str],
    follow: bool,
    out: TextIO,
    *,
    poll_seconds: float = 0.5,
    lines: int = 20,
) -> None:
    """Print the last `lines` entries of the audit log readably; with `follow`, keep
    printing new entries as they are written (until interrupted)."""
    p = Path(path)
    if not p.exists():
        out.write(f"no audit log at {p} yet\n")
        if not follow:
            return
        while not p.exists():
            time.sleep(poll_seconds)
    with p.open("rb") as fh:
        backlog = fh.read().splitlines()[-lines:] if lines else []
        for raw in backlog:
            out.write(_readable(raw) + "\n")
        out.flush()
        pending = b""
        while follow:
            chunk = fh.read()
            if not chunk:
                time.sleep(poll_seconds)
                continue
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                if raw.strip():
                    out.write(_readable(raw) + "\n")
            out.flush()


def _readable(raw: bytes) -> str:
    try:
        entry = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw.decode("utf-8", "replace")
    return format_entry(entry) if isinstance(entry, dict) else str(entry)

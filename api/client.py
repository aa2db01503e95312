"""A small synchronous client for sluice's HTTP API (httpx): simple and federated queries,
result paging, and the run verbs (submit, list, show, cancel, delete, logs, result, wait).

    from api.client import Client

    with Client("http://127.0.0.1:8787", token=None) as c:
        run = c.submit_run(open("dag.yaml").read(), name="nightly", idempotency_key="n-1")
        for ev in c.logs(run["run_id"]):          # log lines, then {"event": "end", ...}
            print(ev)
        c.download_result(run["run_id"], "out.parquet")

Every non-2xx answer raises `ApiFailure` carrying the status and the error envelope.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec

from engine.run_records import TERMINAL

_JSON = msgspec.json.Decoder()


class ApiFailure(Exception):
    """Raised when the server answers with an error status; `body` is its JSON envelope."""

    def __init__(self, status: int, body: dict[str, Any], headers: httpx.Headers) -> None:
        raw = body.get("error")
        error: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self.status = status
        self.body = body
        self.code: str | None = error.get("code") or error.get("stage")
        self.message: str = error.get("message") or error.get("reason") or str(body)
        self.retry_after = headers.get("retry-after")
        super().__init__(f"HTTP {status} {self.code}: {self.message}")


class Event(msgspec.Struct, frozen=True):
    """One Server-Sent Event of a run's log stream."""

    event: str
    data: dict[str, Any]
    id: int | None = None


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8787",
        *,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        resp = self.http.request(method, path, **kw)
        if resp.status_code >= 400:
            try:
                body = _JSON.decode(resp.content)
            except msgspec.DecodeError:
                body = {"error": {"message": resp.text}}
            raise ApiFailure(resp.status_code, body, resp.headers)
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        body = _JSON.decode(self._call(method, path, **kw).content)
        if not isinstance(body, dict):
            raise ApiFailure(
                200, {"error": {"message": f"expected a JSON object: {body!r}"}}, httpx.Headers()
            )
        return body

    # -- queries -----------------------------------------------------------------------------
    def query(
        self,
        database: str,
        table: str,
        query: str,
        *,
        language: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """POST /v1/query/simple."""
        body: dict[str, Any] = {
            "database": database,
            "table": table,
            "query": query,
            "dry_run": dry_run,
        }
        if language:
            body["language"] = language
        return self._json("POST", "/v1/query/simple", json=body)

    def federated(
        self, steps: list[dict[str, Any]], merge: str | None = None, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """POST /v1/query (a DAG of steps plus an optional DuckDB merge)."""
        return self._json(
            "POST",
            "/v1/query",
            json={"steps": steps, "merge": merge, "dry_run": dry_run},
        )

    def result_page(self, request_id: str, page: int = 1, size: int = 100) -> dict[str, Any]:
        return self._json(
            "GET",
            f"/v1/results/{request_id}",
            params={"page": page, "size": size},
        )

    def result_rows(self, request_id: str, size: int = 10_000) -> Iterator[dict[str, Any]]:
        """Every row of a stored result, page by page."""
        page = 1
        while True:
            body = self.result_page(request_id, page, size)
            yield from body["rows"]
            if not body["has_more"]:
                return
            page += 1

    # -- runs --------------------------------------------------------------------------------
    def submit_run(
        self,
        config: str | dict[str, Any],
        *,
        config_format: str | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        timeout_secs: float | None = None,
        doctor_first: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """POST /v1/runs; `config` is YAML or JSON text (format guessed) or a dict."""
        if config_format is None:
            config_format = (
                "json" if isinstance(config, dict) or config.lstrip().startswith("{") else "yaml"
            )
        if isinstance(config, dict):
            config = msgspec.json.encode(config).decode()
        body: dict[str, Any] = {
            "config": config,
            "config_format": config_format,
            "doctor_first": doctor_first,
        }
        optional = {
            "name": name,
            "labels": labels,
            "timeout_secs": timeout_secs,
            "idempotency_key": idempotency_key,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return self._json("POST", "/v1/runs", json=body)

    def runs(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of GET /v1/runs: {runs, next_cursor}."""
        params = {
            k: v
            for k, v in (
                ("status", status),
                ("name", name),
                ("since", since),
                ("until", until),
                ("cursor", cursor),
            )
            if v is not None
        }
        params["limit"] = str(limit)
        return self._json("GET", "/v1/runs", params=params)

    def iter_runs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.runs(cursor=cursor, **filters)
            yield from page["runs"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def run(self, run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/runs/{run_id}")

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/runs/{run_id}/cancel")

    def delete(self, run_id: str) -> None:
        self._call("DELETE", f"/v1/runs/{run_id}")

    def logs(self, run_id: str, *, last_event_id: int | None = None) -> Iterator[Event]:
        """The run's SSE stream: `log` and `truncated` events, then one `end`."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id else {}
        with self.http.stream(
            "GET",
            f"/v1/runs/{run_id}/logs",
            headers=headers,
            timeout=httpx.Timeout(self.http.timeout.connect, read=None),
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ApiFailure(resp.status_code, _JSON.decode(resp.content), resp.headers)
            yield from parse_sse(resp.iter_lines())

    def wait(
        self, run_id: str, *, poll: float = 0.5, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll until the run is terminal; returns its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.run(run_id)
            if record["status"] in TERMINAL:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {record['status']}")
            time.sleep(poll)

    def download_result(self, run_id: str, path: str | Path, *, format: str | None = None) -> Path:
        """Stream a completed run's result into `path` (format from the suffix)."""
        target = Path(path)
        fmt = format or {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}.get(
            target.suffix, "parquet"
        )
        with self.http.stream("GET", f"/v1/runs/{run_id}/result", params={"format": fmt}) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ApiFailure(resp.status_code, _JSON.decode(resp.content), resp.headers)
            tmp = target.with_name(target.name + ".part")
            with tmp.open("wb") as out:
                for chunk in resp.iter_bytes():
                    out.write(chunk)
            tmp.replace(target)
        return target


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Events from text/event-stream lines (comments and keep-alives skipped)."""
    kind, data, event_id = "message", "", None
    for line in lines:
        if not line:
            if data:
                yield Event(kind, _JSON.decode(data), event_id)
            kind, data, event_id = "message", "", None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            kind = value
        elif field == "data":
            data = f"{data}\n{value}" if data else value
        elif field == "id":
            event_id = int(value) if value.isdigit() else None

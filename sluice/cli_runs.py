"""`sluice run submit|list|show|cancel|logs|result`: the run control plane from the shell,
through api/client.py against a running `sluice serve`. The server is --url, else $SLUICE_URL,
else server.host/port of --config or ./sluice.yaml, else http://127.0.0.1:8787; the token is
--token or $SLUICE_TOKEN. Progress goes to stderr, data to stdout."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from engine.run_records import RunStatus

EXIT_OK, EXIT_ERROR = 0, 1
TERMINAL = frozenset(RunStatus) - {RunStatus.QUEUED, RunStatus.RUNNING}


DEFAULT_URL = "http://127.0.0.1:8787"


def server_url(args: argparse.Namespace) -> str:
    """--url, $SLUICE_URL, the config's server.host/port, or the default."""
    if args.url:
        return str(args.url)
    if os.environ.get("SLUICE_URL"):
        return os.environ["SLUICE_URL"]
    path = args.config or ("sluice.yaml" if Path("sluice.yaml").exists() else None)
    if path is None:
        return DEFAULT_URL
    from engine.config import load_config

    server = load_config(path).server
    # a server bound to every interface is reached on loopback from here
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
    host = wildcard.get(server.host, server.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{server.port}"


def _client(args: argparse.Namespace) -> Any:
    from api.client import Client

    args.url = server_url(args)
    return Client(args.url, token=args.token)


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _dump(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def _failure(exc: Exception, url: str | None = None) -> int:
    import httpx

    from api.client import ApiFailure

    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        _err(
            f"error: cannot connect to the sluice server at {url}: {exc}\n"
            "start it with `sluice serve`, or point at it with --url, $SLUICE_URL or "
            "server.host/port in sluice.yaml"
        )
    elif isinstance(exc, ApiFailure):
        _err(f"error: {exc.message} ({exc.status} {exc.code})")
        details = exc.body.get("error", {}).get("details") if isinstance(exc.body, dict) else None
        if details:
            _err(f"details: {msgspec.json.encode(details).decode()}")
        if exc.retry_after:
            _err(f"retry after {exc.retry_after}s")
    else:
        _err(f"error: {exc}")
    return EXIT_ERROR


def cmd_submit(args: argparse.Namespace) -> int:
    import httpx

    from api.client import ApiFailure

    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        _err(f"error: cannot read {args.file}: {exc.strerror}")
        return EXIT_ERROR
    fmt = "json" if args.file.endswith(".json") else "yaml"
    labels = dict(kv.split("=", 1) for kv in args.label or [])
    with _client(args) as c:
        try:
            run = c.submit_run(
                text,
                config_format=fmt,
                name=args.name,
                labels=labels or None,
                timeout_secs=args.timeout,
                doctor_first=args.doctor_first,
                idempotency_key=args.idempotency_key,
            )
            run_id = run["run_id"]
            if not args.wait and not args.output:
                _dump(run)
                return EXIT_OK
            _err(f"run {run_id} {run['status']}")
            status = follow(c, run_id, quiet=args.quiet)
            record = c.run(run_id)
            if args.json:
                _dump(record)
            if status != RunStatus.COMPLETED:
                err = record.get("error") or {}
                _err(f"run {run_id} {status}: {err.get('message', '')}")
                return EXIT_ERROR
            _err(
                f"run {run_id} completed: {record['records_written']} records "
                f"in {record['elapsed_secs']}s"
            )
            if args.output:
                c.download_result(run_id, args.output)
                _err(f"wrote {args.output}")
            return EXIT_OK
        except (ApiFailure, httpx.HTTPError) as exc:
            return _failure(exc, args.url)


def follow(client: Any, run_id: str, *, quiet: bool = False) -> str:
    """Print the run's step lines (stderr) from its SSE stream until `end`; the status."""
    status = "unknown"
    for ev in client.logs(run_id):
        if ev.event == "log" and not quiet:
            _err(f"  {ev.data['message']}")
        elif ev.event == "truncated":
            _err(f"  ... {ev.data.get('dropped', '?')} line(s) dropped")
        elif ev.event == "end":
            status = ev.data.get("status") or status
            break
    if status not in TERMINAL:  # the stream ended early (server stopping): poll instead
        status = client.wait(run_id)["status"]
    return status


def cmd_list(args: argparse.Namespace) -> int:
    import httpx

    from api.client import ApiFailure

    with _client(args) as c:
        try:
            page = c.runs(status=args.status, name=args.name, limit=args.limit, cursor=args.cursor)
        except (ApiFailure, httpx.HTTPError) as exc:
            return _failure(exc, args.url)
    if args.json:
        _dump(page)
        return EXIT_OK
    _out(f"{'RUN_ID':<26}  {'STATUS':<9}  {'SUBMITTED':<24}  {'ELAPSED':>8}  {'RECORDS':>10}  NAME")
    for r in page["runs"]:
        elapsed = "" if r["elapsed_secs"] is None else f"{r['elapsed_secs']:.1f}s"
        _out(
            f"{r['run_id']}  {r['status']:<9}  {r['submitted_at']}  {elapsed:>8}  "
            f"{r['records_written']:>10}  {r['name'] or ''}"
        )
    if page["next_cursor"]:
        _err(f"more: --cursor {page['next_cursor']}")
    return EXIT_OK


def _one(args: argparse.Namespace, verb: str) -> int:
    import httpx

    from api.client import ApiFailure

    with _client(args) as c:
        try:
            if verb == "show":
                _dump(c.run(args.run_id))
            elif verb == "cancel":
                record = c.cancel(args.run_id)
                _err(f"run {args.run_id}: {record['status']}")
            elif verb == "delete":
                c.delete(args.run_id)
                _err(f"deleted {args.run_id}")
            elif verb == "result":
                c.download_result(args.run_id, args.output)
                _err(f"wrote {args.output}")
            elif verb == "logs":
                for ev in c.logs(args.run_id, last_event_id=args.after):
                    if ev.event == "log":
                        _out(f"{ev.id}\t{ev.data['level']}\t{ev.data['message']}")
                    elif ev.event == "truncated":
                        _err(f"... {ev.data.get('dropped', '?')} line(s) dropped")
                    elif ev.event == "end":
                        _err(f"end: {ev.data.get('status')}")
        except (ApiFailure, httpx.HTTPError) as exc:
            return _failure(exc, args.url)
    return EXIT_OK


def add_run_commands(subparsers: Any) -> None:
    """Register `sluice run ...` on the main parser's subparsers."""
    run = subparsers.add_parser("run", help="submit and manage runs on a sluice server")
    sub = run.add_subparsers(dest="run_command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url",
            help="the server (default $SLUICE_URL, else server.host/port of the config, "
            f"else {DEFAULT_URL})",
        )
        p.add_argument(
            "--config", help="sluice.yaml naming the server (default ./sluice.yaml if present)"
        )
        p.add_argument(
            "--token",
            default=os.environ.get("SLUICE_TOKEN"),
            help="bearer token (default $SLUICE_TOKEN)",
        )

    s = sub.add_parser("submit", help="submit a federated query file as a run")
    common(s)
    s.add_argument("-f", "--file", required=True, help="dag.yaml or dag.json")
    s.add_argument("--wait", action="store_true", help="follow progress until it ends")
    s.add_argument(
        "-o", "--output", help="write the result: .parquet, .csv or .ndjson (implies --wait)"
    )
    s.add_argument("--name", help="a name to find the run by (run list --name)")
    s.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label (repeatable)")
    s.add_argument("--timeout", type=float, help="seconds the run may take (timeout_secs)")
    s.add_argument(
        "--idempotency-key", help="a retried submit with the same key returns the same run"
    )
    s.add_argument(
        "--doctor-first", action="store_true", help="probe the databases before queueing"
    )
    s.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    s.add_argument("--json", action="store_true", help="print the final record as JSON")
    s.set_defaults(func=cmd_submit)

    ls = sub.add_parser("list", help="list runs, newest first")
    common(ls)
    ls.add_argument("--status", help="only these statuses, comma-separated (queued,running,...)")
    ls.add_argument("--name", help="only runs with this name")
    ls.add_argument("--limit", type=int, default=50, help="runs per page (default 50)")
    ls.add_argument("--cursor", help="the page after this cursor (printed as `more: ...`)")
    ls.add_argument("--json", action="store_true", help="print the page as JSON")
    ls.set_defaults(func=cmd_list)

    for verb, text in (
        ("show", "print one run record"),
        ("cancel", "cancel a run"),
        ("delete", "delete a finished run"),
        ("logs", "stream a run's log"),
        ("result", "download a completed run's result"),
    ):
        p = sub.add_parser(verb, help=text)
        common(p)
        p.add_argument("run_id", help="the run's id (from run submit or run list)")
        if verb == "logs":
            p.add_argument("--after", type=int, help="resume after this event id")
        if verb == "result":
            p.add_argument(
                "-o", "--output", required=True, help="the file: .parquet, .csv or .ndjson"
            )
        p.set_defaults(func=lambda a, v=verb: _one(a, v))

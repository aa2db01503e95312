"""The `sluice` command: serve, query, validate, doctor, init, audit. Kept thin: every
subcommand calls into api/ or engine/."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

EXIT_OK, EXIT_ERROR, EXIT_BLOCKED = 0, 1, 2
DEMO_DIR = ".sluice/demo"


def resolve_config_path(explicit: str | None) -> tuple[str, bool]:
    """--config, else ./sluice.yaml, else the embedded demo (created on first use)."""
    if explicit:
        return explicit, False
    if Path("sluice.yaml").exists():
        return "sluice.yaml", False
    from engine.demo import ensure_demo

    return str(ensure_demo(DEMO_DIR)), True


def cmd_serve(args: argparse.Namespace) -> int:
    from api.server import RefusedToStart, serve
    from engine.config import load_config

    path, demo = resolve_config_path(args.config)
    config = load_config(path)
    # the run manager reads these in every worker process (api/runs_routes.build_run_manager)
    for flag, env in (
        (args.max_concurrent_runs, "SLUICE_MAX_CONCURRENT_RUNS"),
        (args.max_queued_runs, "SLUICE_MAX_QUEUED_RUNS"),
        (args.run_store, "SLUICE_RUN_STORE"),
    ):
        if flag is not None:
            os.environ[env] = str(flag)
    host = args.host or config.server.host
    os.environ["SLUICE_BIND_HOST"] = host  # the app's Host allow-list follows the bind
    port = args.port if args.port is not None else config.server.port
    url = f"http://{host}:{port}"
    if demo:
        print(f"sluice: no sluice.yaml here; serving the embedded demo from {DEMO_DIR}/")
        print(f"  try:  curl {url}/v1/databases")
        print(
            f"        curl -X POST {url}/v1/query/simple -H 'Content-Type: application/json' "
            '-d \'{"database": "shop", "table": "orders", "query": '
            '"SELECT status, count(*) AS n FROM orders GROUP BY status"}\''
        )
    print(f"sluice: serving {path} on {url} ({args.server}, {args.workers} worker(s))", flush=True)
    try:
        return (
            serve(
                path,
                host,
                port,
                workers=args.workers,
                insecure_no_auth=args.insecure_no_auth,
                access_log=args.access_log,
                server=args.server,
            )
            or 0
        )
    except RefusedToStart as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return EXIT_ERROR


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.errors import ConfigError

    path = args.path or "sluice.yaml"
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    print(f"{path}: ok ({len(config.databases)} database(s))")
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    from api.envelopes import ENCODER, QuerySuccess
    from api.local import open_service
    from api.service import SafetyBlocked
    from connectors.errors import SluiceError
    from engine.config import load_config

    if args.file is None and (args.query is None or not args.database or not args.table):
        print('sluice query: give -d DATABASE -t TABLE "QUERY", or -f dag.yaml', file=sys.stderr)
        return EXIT_ERROR
    dag = None
    if args.file is not None:
        from engine.dagfile import load_dag

        dag = load_dag(args.file)
        if args.dry_run:
            dag = msgspec.structs.replace(dag, dry_run=True)
    path, _ = resolve_config_path(args.config)
    config = load_config(path)

    async def go() -> int:
        async with open_service(config) as session:
            try:
                if dag is not None:
                    progress = Progress(sys.stderr)
                    result = await session.federated(dag, on_progress=progress)
                    progress.done()
                else:
                    result = await session.simple(
                        args.database,
                        args.table,
                        args.query,
                        language=args.language,
                        dry_run=args.dry_run,
                    )
            except SafetyBlocked as exc:
                b = exc.block
                print(f"blocked by {b.stage}: {b.reason}", file=sys.stderr)
                if b.suggestion:
                    print(f"suggestion: {b.suggestion}", file=sys.stderr)
                return EXIT_BLOCKED
            except SluiceError as exc:
                print(f"error: {exc.message}", file=sys.stderr)
                if exc.suggestion:
                    print(f"suggestion: {exc.suggestion}", file=sys.stderr)
                return EXIT_ERROR
            if not isinstance(result, QuerySuccess):
                sys.stdout.write(ENCODER.encode(result).decode() + "\n")
                return EXIT_OK
            for w in result.safety.warnings:
                print(f"warning: {w}", file=sys.stderr)
            if args.output:
                return write_output(session, result, args.output)
            if args.format == "json":
                sys.stdout.write(ENCODER.encode(result).decode() + "\n")
                return EXIT_OK
            write_rows(result.data.columns, result.data.rows, args.format, sys.stdout)
            if result.data.truncated and dag is not None:
                print(
                    f"({result.data.row_count} rows in all; write them with -o out.parquet)",
                    file=sys.stderr,
                )
        return EXIT_OK

    return anyio.run(go)


class Progress:
    """Progress of long work on stderr: nothing for the first second, then per step its rows
    so far (at most once a second) and when it finishes."""

    QUIET_MS = 1000.0

    def __init__(self, out: Any) -> None:
        self.out = out
        self.last: dict[str, float] = {}

    def __call__(self, event: Any) -> None:
        if event.at_ms < self.QUIET_MS or event.event in ("started", "native_query"):
            return
        now = event.at_ms
        if event.event == "batch" and now - self.last.get(event.step_id, -1e9) < 1000.0:
            return
        self.last[event.step_id] = now
        print(
            f"  {event.step_id}: {event.event:<12} {event.rows:>12,} rows "
            f"{event.batches:>6} batches  {event.at_ms / 1000:8.2f}s",
            file=self.out,
        )

    def done(self) -> None:
        self.out.flush()


def write_output(session: Any, result: Any, target: str) -> int:
    """The whole stored result (not only the inline rows) to a file, by its extension."""
    from engine.export import format_for, iter_chunks

    if result.metadata.result_pages is None and not result.metadata.steps:
        print("-o needs a federated query (-f dag.yaml)", file=sys.stderr)
        return EXIT_ERROR
    try:
        fmt = format_for(target)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    source = session.service.store.file(result.request_id)
    with open(target, "wb") as out:
        for chunk in iter_chunks(source, fmt):
            out.write(chunk)
    print(f"wrote {result.data.row_count:,} rows to {target}", file=sys.stderr)
    return EXIT_OK


def write_rows(columns: Sequence[str], rows: list[dict[str, Any]], fmt: str, out: Any) -> None:
    from api.envelopes import ENCODER

    def text(v: Any) -> str:
        if v is None:
            return "" if fmt == "csv" else "NULL"
        if isinstance(v, str):
            return v
        return ENCODER.encode(v).decode().strip('"')

    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(columns)
        for r in rows:
            w.writerow([text(r[c]) for c in columns])
        return
    cells = [[text(r[c]) for c in columns] for r in rows]
    widths = [
        min(60, max([len(c)] + [len(row[i]) for row in cells])) for i, c in enumerate(columns)
    ]
    buf = io.StringIO()
    buf.write(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + "\n")
    buf.write("-+-".join("-" * w for w in widths) + "\n")
    for row in cells:
        buf.write(" | ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)) + "\n")
    buf.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    out.write(buf.getvalue())


def cmd_doctor(args: argparse.Namespace) -> int:
    from connectors import registry
    from connectors.errors import SluiceError
    from engine.config import load_config

    path, _ = resolve_config_path(args.config)
    config = load_config(path)

    async def probe() -> int:
        failed = 0
        for db in config.databases:
            connector = registry.create(db)
            try:
                with anyio.fail_after(db.connect_timeout_seconds + 5):
                    await connector.open()
                    await connector.ping()
                    tables = await connector.discover()
                print(f"ok    {db.name} ({db.type}): {len(tables)} table(s)")
            except (SluiceError, TimeoutError) as exc:
                failed += 1
                print(f"FAIL  {db.name} ({db.type}): {exc or 'timed out'}")
            finally:
                await connector.close()
        return EXIT_ERROR if failed else EXIT_OK

    return anyio.run(probe)


INIT_TEMPLATE = """\
# sluice.yaml: every key is optional except `databases`. `${VAR}` and `${VAR:-default}`
# read the environment, so secrets never need to be written here.
databases:
  - name: pg                      # the name clients use in "database"
    type: postgresql              # postgresql | mysql | sqlite | duckdb | mongodb
    host: 127.0.0.1
    port: 5432
    database: postgres
    user: postgres
    password: ${PGPASSWORD:-}
    pool_size: 10
    connect_timeout_seconds: 5
    query_timeout_seconds: 30
  # - name: shop
  #   type: sqlite
  #   path: ./shop.sqlite
permissions:
  default:                        # applies when no bearer token names a principal
    pg:
      level: R                    # R, W, RW, RA, RWA, A or none
      tables:
        secrets: none             # a per-table override
        # users: {level: R, deny_columns: [email]}
safety:
  max_rows_per_query: 10000
  inline_rows: 1000
  query_timeout_seconds: 30
server:
  host: 127.0.0.1
  port: 8787
"""


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.path or "sluice.yaml")
    if target.exists() and not args.force:
        print(f"{target} exists; pass --force to overwrite", file=sys.stderr)
        return EXIT_ERROR
    target.write_text(INIT_TEMPLATE, encoding="utf-8")
    print(f"wrote {target}; check it with `sluice validate {target}`")
    return EXIT_OK


def cmd_audit_tail(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from safety.audit import tail

    path, _ = resolve_config_path(args.config)
    config = load_config(path)
    log = (
        args.file or config.server.audit_log or os.path.join(config.server.data_dir, "audit.jsonl")
    )
    try:
        tail(log, follow=args.follow, out=sys.stdout)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice", description="federated queries, safely")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the HTTP API (the embedded demo without a config)")
    s.add_argument("--config", help="sluice.yaml (default: ./sluice.yaml, else the demo)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow binding off loopback without bearer tokens",
    )
    s.add_argument("--access-log", action="store_true")
    s.add_argument(
        "--max-concurrent-runs",
        type=int,
        help="runs executing at once (default server.max_concurrent_runs)",
    )
    s.add_argument(
        "--max-queued-runs",
        type=int,
        help="runs waiting at most; past it submit is a 429 with Retry-After",
    )
    s.add_argument(
        "--run-store",
        help="run store URL: postgresql://... to share it between "
        "processes (default: <data_dir>/runs.sqlite)",
    )
    s.add_argument(
        "--server",
        choices=["hypercorn", "uvicorn", "granian"],
        default="hypercorn",
        help="ASGI server (hypercorn by default; see README Performance)",
    )
    s.set_defaults(func=cmd_serve)

    q = sub.add_parser("query", help="run a query (or -f dag.yaml) in-process")
    q.add_argument("query", nargs="?")
    q.add_argument("--config")
    q.add_argument("--file", "-f", help="a federated query (steps + merge) in YAML or JSON")
    q.add_argument("--output", "-o", help="write the whole result: .parquet, .csv or .ndjson")
    q.add_argument("--database", "-d")
    q.add_argument("--table", "-t")
    q.add_argument("--language")
    q.add_argument("--format", choices=["table", "json", "csv"], default="table")
    q.add_argument("--dry-run", action="store_true")
    q.set_defaults(func=cmd_query)

    v = sub.add_parser("validate", help="check a sluice.yaml; exits 1 with line-numbered errors")
    v.add_argument("path", nargs="?")
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("doctor", help="probe every configured database")
    d.add_argument("--config")
    d.set_defaults(func=cmd_doctor)

    i = sub.add_parser("init", help="write an annotated sluice.yaml template")
    i.add_argument("path", nargs="?")
    i.add_argument("--force", action="store_true")
    i.set_defaults(func=cmd_init)

    a = sub.add_parser("audit", help="read the audit log")
    asub = a.add_subparsers(dest="audit_command", required=True)
    t = asub.add_parser("tail", help="print the audit log readably")
    t.add_argument("--config")
    t.add_argument("--file")
    t.add_argument("--follow", "-f", action="store_true")
    t.set_defaults(func=cmd_audit_tail)
    from sluice.cli_runs import add_run_commands

    add_run_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.errors import ConfigError

    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

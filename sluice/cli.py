"""The `sluice` command: serve, query, validate, doctor, init, audit. Kept thin: every
subcommand calls into api/ or engine/."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from sluice.cli_query import FORMATS, stdout_closed, write_rows

EXIT_OK, EXIT_ERROR, EXIT_BLOCKED = 0, 1, 2
EXIT_PIPE = 141  # 128 + SIGPIPE: what `yes | head` reports for `yes`
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
    # flags override the config's `server` settings (every worker gets them from serve())
    flags = {
        "max_concurrent_runs": args.max_concurrent_runs,
        "max_queued_runs": args.max_queued_runs,
        "run_store": args.run_store,
    }
    server_settings = {k: v for k, v in flags.items() if v is not None}
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
                server_settings=server_settings,
            )
            or 0
        )
    except RefusedToStart as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return EXIT_ERROR


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.config import grant_warnings, load_config
    from engine.errors import ConfigError

    path = args.path or "sluice.yaml"
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    for warning in grant_warnings(config, _raw(path)):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: ok ({len(config.databases)} database(s))")
    return EXIT_OK


def _raw(path: str) -> Any:
    """The config as a round-trip YAML document (for the lines of warnings)."""
    from engine.yaml_doc import load_yaml

    return load_yaml(Path(path).read_text(encoding="utf-8"))


def report_failure(
    exc: BaseException, err: Any, *, json_out: Any = None, request_id: str | None = None
) -> int | None:
    """Print why a query did not run (stderr; with `json_out`, its JSON envelope there too);
    the exit code, or None for an exception that is not a query failure."""
    from api.envelopes import ENCODER, BlockedError
    from api.envelopes import QueryBlocked as BlockedEnvelope
    from api.errors import envelope_for
    from api.service import SafetyBlocked
    from connectors.errors import SluiceError

    if isinstance(exc, SafetyBlocked):
        b = exc.block
        print(f"blocked by {b.stage}: {b.reason}", file=err)
        if b.suggestion:
            print(f"suggestion: {b.suggestion}", file=err)
        envelope: Any = BlockedEnvelope(
            request_id=request_id or "",
            status="blocked",
            error=BlockedError(stage=b.stage, reason=b.reason, suggestion=b.suggestion),
        )
        code = EXIT_BLOCKED
    elif isinstance(exc, SluiceError):
        print(f"error: {exc.message}", file=err)
        if exc.suggestion:
            print(f"suggestion: {exc.suggestion}", file=err)
        envelope = envelope_for(exc, request_id or "")[1]
        code = EXIT_ERROR
    else:
        return None
    if json_out is not None:
        json_out.write(ENCODER.encode(envelope).decode() + "\n")
    return code


def cmd_query(args: argparse.Namespace) -> int:
    from api.envelopes import ENCODER, QuerySuccess
    from api.local import open_service
    from engine.config import load_config
    from engine.ir import FederatedQuery, StepSpec
    from sluice.cli_query import CliInputError, Progress, infer_table, output_format, query_text

    try:
        text = query_text(args.query, args.sql_file, sys.stdin)
        if args.file is None and text is None:
            raise CliInputError(
                'give a query: sluice query [-d DATABASE] "SELECT ..." (or - / --sql-file '
                "PATH to read it from stdin or a file), or -f dag.yaml"
            )
        if args.file is not None and text is not None:
            raise CliInputError("give either a query or -f dag.yaml, not both")
        out_format = output_format(args.output) if args.output else None
    except CliInputError as exc:
        print(f"sluice query: {exc}", file=sys.stderr)
        return EXIT_ERROR
    dag = None
    if args.file is not None:
        from engine.dagfile import load_dag

        dag = load_dag(args.file)
        if args.dry_run:
            dag = msgspec.structs.replace(dag, dry_run=True)
    path, _ = resolve_config_path(args.config)
    config = load_config(path)
    database, table = args.database, args.table
    if dag is None:
        assert text is not None
        try:
            if database is None:
                names = [d.name for d in config.databases]
                if len(names) != 1:
                    raise CliInputError(f"give -d DATABASE, one of: {', '.join(names)}")
                database = names[0]
            db = config.database(database)
            if table is None and db is not None:  # an unknown database is the service's error
                table = infer_table(text, db.type)
        except CliInputError as exc:
            print(f"sluice query: {exc}", file=sys.stderr)
            return EXIT_ERROR
        if args.output:  # a one-step federated query: its whole result is stored on disk
            step = StepSpec(
                step_id="result", database=database, table=table, query=text, language=args.language
            )
            dag = FederatedQuery(steps=[step], dry_run=args.dry_run)
    if dag is not None and (args.max_rows is not None or args.allow_truncation):
        dag = msgspec.structs.replace(
            dag,
            max_rows=args.max_rows if args.max_rows is not None else dag.max_rows,
            allow_truncation=args.allow_truncation or dag.allow_truncation,
        )

    async def go() -> int:
        async with open_service(config) as session:
            try:
                if dag is not None:
                    progress = Progress(sys.stderr)
                    # -o asked for the whole answer: the export bound, and no silent cut
                    result = await session.federated(
                        dag, on_progress=progress, export=bool(args.output)
                    )
                    progress.done()
                else:
                    result = await session.simple(
                        database,
                        table or "",
                        text or "",
                        language=args.language,
                        dry_run=args.dry_run,
                    )
            except Exception as exc:
                code = report_failure(
                    exc,
                    sys.stderr,
                    json_out=sys.stdout if args.format == "json" else None,
                    request_id=session.last_request_id,
                )
                if code is None:
                    raise
                return code
            if not isinstance(result, QuerySuccess):
                sys.stdout.write(ENCODER.encode(result).decode() + "\n")
                return EXIT_OK
            for w in result.safety.warnings:
                print(f"warning: {w}", file=sys.stderr)
            if args.output:
                return await write_output(session, result, args.output, out_format)
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


async def write_output(session: Any, result: Any, target: str, fmt: str | None) -> int:
    """The whole stored result (not only the inline rows) to a file, in its format."""
    from engine.export import format_for, iter_chunks

    source = await session.service.store.open_file(result.request_id)

    def write() -> None:
        with source, open(target, "wb") as out:
            for chunk in iter_chunks(source, fmt or format_for(target)):
                out.write(chunk)

    await anyio.to_thread.run_sync(write)
    print(f"wrote {result.data.row_count:,} rows to {target}", file=sys.stderr)
    return EXIT_OK


def cmd_shell(args: argparse.Namespace) -> int:
    from api.local import open_service
    from engine.config import load_config
    from sluice.cli_shell import run_shell

    path, _ = resolve_config_path(args.config)
    config = load_config(path)

    async def go() -> int:
        async with open_service(config) as session:
            return await run_shell(session, args.database)

    return anyio.run(go)


def cmd_completion(args: argparse.Namespace) -> int:
    from sluice.cli_complete import bash_script, zsh_script

    parser = build_parser()
    sys.stdout.write(bash_script(parser) if args.shell == "bash" else zsh_script(parser))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from connectors import registry
    from connectors.errors import SluiceError
    from engine.config import grant_warnings, load_config

    path, _ = resolve_config_path(args.config)
    config = load_config(path)

    async def probe() -> int:
        failed = 0
        discovered: dict[str, list[str]] = {}
        for db in config.databases:
            connector = registry.create(db)
            try:
                with anyio.fail_after(db.connect_timeout_seconds + 5):
                    await connector.open()
                    await connector.ping()
                    tables = await connector.discover()
                discovered[db.name] = [t.name for t in tables]
                print(f"ok    {db.name} ({db.type}): {len(tables)} table(s)")
            except (SluiceError, TimeoutError) as exc:
                failed += 1
                print(f"FAIL  {db.name} ({db.type}): {exc or 'timed out'}")
            finally:
                await connector.close()
        # grants that name a database or table that is neither configured nor discovered
        for warning in grant_warnings(config, _raw(path), discovered):
            print(f"warn  {warning}")
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
  # run_store: postgresql://sluice@db/sluice   # runs shared by several processes
# results:                        # results shared by several processes (README: "Beyond one
#   store: s3                     # machine"); the credentials come from AWS_ACCESS_KEY_ID and
#   endpoint: http://127.0.0.1:8333   # AWS_SECRET_ACCESS_KEY, never from this file
#   bucket: sluice
# engine:
#   spark:                        # big merges on a Spark Connect server (README: "Big
#     remote: sc://127.0.0.1:15002    # merges on Spark"); requests ask with "engine": "spark"
#     staging: file:///var/lib/sluice/staging   # a folder sluice and Spark both see
#     min_rows: 50000000          # or: merges past this many step rows go there by themselves
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sluice")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


CONFIG_HELP = "sluice.yaml to use (default: ./sluice.yaml, else the embedded demo)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice", description="federated queries, safely")
    p.add_argument("--version", action="version", version=f"sluice {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="serve the HTTP API (the embedded demo without a config)")
    s.add_argument("--config", help=CONFIG_HELP)
    s.add_argument("--host", help="address to bind (default server.host, 127.0.0.1)")
    s.add_argument("--port", type=int, help="port to bind (default server.port, 8787)")
    s.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; see README)"
    )
    s.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow binding off loopback without bearer tokens",
    )
    s.add_argument("--access-log", action="store_true", help="log every HTTP request")
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

    q = sub.add_parser(
        "query",
        help="run a query (or -f dag.yaml) in-process",
        description="Run one query, or a federated query file, through the safety pipeline.",
        epilog='examples:  sluice query "SELECT count(*) FROM orders"   '
        "echo 'SELECT 1 FROM t' | sluice query -d db -   "
        "sluice query -f dag.yaml -o out.parquet",
    )
    q.add_argument(
        "query", nargs="?", help="the query text; - reads it from stdin (or use --sql-file)"
    )
    q.add_argument("--config", help=CONFIG_HELP)
    q.add_argument(
        "--sql-file", "-F", metavar="PATH", help="read the query from a file (- for stdin)"
    )
    q.add_argument("--file", "-f", help="a federated query (steps + merge) in YAML or JSON")
    q.add_argument(
        "--output",
        "-o",
        help="write the whole result to a file: .parquet, .csv or .ndjson "
        "(checked before anything runs)",
    )
    q.add_argument(
        "--max-rows",
        type=int,
        help="rows per step of -o or -f (default with -o: safety.max_export_rows, its bound; "
        "else safety.max_rows_per_query)",
    )
    q.add_argument(
        "--allow-truncation",
        action="store_true",
        help="with -o, write the first --max-rows rows of a step that has more instead of failing",
    )
    q.add_argument(
        "--database", "-d", help="the database to query (optional when only one is configured)"
    )
    q.add_argument(
        "--table", "-t", help="the table the query is about (optional when the SQL names one)"
    )
    q.add_argument("--language", help="sql, mql, ... (default: what the database speaks)")
    q.add_argument(
        "--format", choices=FORMATS, default="table", help="how rows are printed (default table)"
    )
    q.add_argument(
        "--dry-run", action="store_true", help="check and show the rewritten query; run nothing"
    )
    q.set_defaults(func=cmd_query)

    sh = sub.add_parser(
        "shell", help="explore the configured databases interactively (with history)"
    )
    sh.add_argument("--config", help=CONFIG_HELP)
    sh.add_argument("--database", "-d", help="the database to start in (default: the first)")
    sh.set_defaults(func=cmd_shell)

    v = sub.add_parser("validate", help="check a sluice.yaml; exits 1 with line-numbered errors")
    v.add_argument("path", nargs="?", help="the file to check (default ./sluice.yaml)")
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("doctor", help="probe every configured database")
    d.add_argument("--config", help=CONFIG_HELP)
    d.set_defaults(func=cmd_doctor)

    i = sub.add_parser("init", help="write an annotated sluice.yaml template")
    i.add_argument("path", nargs="?", help="where to write it (default ./sluice.yaml)")
    i.add_argument("--force", action="store_true", help="overwrite an existing file")
    i.set_defaults(func=cmd_init)

    a = sub.add_parser("audit", help="read the audit log")
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    t = asub.add_parser("tail", help="print the audit log readably")
    t.add_argument("--config", help=CONFIG_HELP)
    t.add_argument("--file", help="the audit log (default: server.audit_log of the config)")
    t.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    t.set_defaults(func=cmd_audit_tail)

    c = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description='Enable with:  eval "$(sluice completion bash)"  (or zsh, in ~/.zshrc)',
    )
    c.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")
    c.set_defaults(func=cmd_completion)
    from sluice.cli_mcp import add_mcp_commands
    from sluice.cli_runs import add_run_commands

    add_run_commands(sub)
    add_mcp_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.errors import ConfigError

    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        stdout_closed()
        return EXIT_PIPE
    except BaseExceptionGroup as group:  # raised inside a task group (the in-process session)
        if group.subgroup(BrokenPipeError) is None:
            raise
        stdout_closed()
        return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())

"""`sluice shell`: explore the configured databases interactively, psql-style.

A statement ends with `;` (it may span lines). Backslash commands look around:
  \\l            databases (type, reachable, tables)      \\c NAME    use database NAME
  \\dt           tables of the current database           \\d TABLE   columns of TABLE
  \\t TABLE      the table for queries that name none      \\format F  table|csv|json|ndjson
  \\?            this help                                \\q         quit (or Ctrl-D)
History is kept in $SLUICE_HISTORY (default ~/.sluice_history) with readline line editing.
Every statement takes the same safety pipeline as `sluice query`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

from sluice.cli_query import FORMATS, CliInputError, infer_table, write_rows

HISTORY_LINES = 1000


def history_path() -> Path:
    return Path(os.environ.get("SLUICE_HISTORY") or Path.home() / ".sluice_history")


class Shell:
    def __init__(self, session: Any, out: TextIO, err: TextIO, database: str | None) -> None:
        self.session = session
        self.out, self.err = out, err
        self.catalog = session.service.catalog
        names = self.catalog.names()
        self.database = database or (names[0] if names else None)
        self.table: str | None = None
        self.format = "table"

    def prompt(self, continuing: bool) -> str:
        return f"{self.database or 'sluice'}{'->' if continuing else '=>'} "

    async def command(self, line: str) -> bool:
        """Run one backslash command; False to quit."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("\\q", "\\quit"):
            return False
        if name == "\\?":
            self.out.write(__doc__.split("\n\n")[1] + "\n")
        elif name == "\\l":
            rows = [
                {
                    "database": n,
                    "type": s.config.type,
                    "reachable": s.reachable,
                    "tables": len(s.tables),
                }
                for n, s in self.catalog.states.items()
            ]
            write_rows(["database", "type", "reachable", "tables"], rows, self.format, self.out)
        elif name == "\\c":
            if self.catalog.get(arg) is None:
                self.err.write(f"no database {arg!r}; \\l lists them\n")
            else:
                self.database, self.table = arg, None
                self.out.write(f"now using {arg}\n")
        elif name == "\\dt":
            state = self._state()
            if state is not None:
                rows = [
                    {"table": t.name, "columns": len(t.fields), "rows (est.)": t.row_count_estimate}
                    for t in state.tables
                ]
                write_rows(["table", "columns", "rows (est.)"], rows, self.format, self.out)
        elif name == "\\d":
            state = self._state()
            info = state.table(arg) if state is not None and arg else None
            if info is None:
                self.err.write(f"no table {arg!r} in {self.database}; \\dt lists them\n")
            else:
                rows = [
                    {
                        "column": f.name,
                        "type": f.data_type,
                        "nullable": f.nullable,
                        "primary key": f.is_primary,
                    }
                    for f in info.fields
                ]
                write_rows(
                    ["column", "type", "nullable", "primary key"], rows, self.format, self.out
                )
        elif name == "\\t":
            self.table = arg or None
            self.out.write(f"table: {self.table or '(inferred from each query)'}\n")
        elif name == "\\format":
            if arg not in FORMATS:
                self.err.write(f"formats: {', '.join(FORMATS)}\n")
            else:
                self.format = arg
        else:
            self.err.write(f"unknown command {name}; \\? lists them\n")
        return True

    def _state(self) -> Any:
        state = self.catalog.get(self.database) if self.database else None
        if state is None:
            self.err.write("no database selected; \\c NAME\n")
        return state

    async def statement(self, text: str) -> None:
        from sluice.cli import report_failure

        if self.database is None:
            self.err.write("no database selected; \\c NAME\n")
            return
        try:
            db_type = self.catalog.get(self.database).config.type
            table = self.table or infer_table(text, db_type)
            result = await self.session.simple(self.database, table, text)
        except CliInputError as exc:
            self.err.write(f"error: {exc}\n")
            return
        except Exception as exc:
            if report_failure(exc, self.err) is None:
                raise
            return
        data = getattr(result, "data", None)
        if data is None:
            from api.envelopes import ENCODER

            self.out.write(ENCODER.encode(result).decode() + "\n")
            return
        for w in result.safety.warnings:
            self.err.write(f"warning: {w}\n")
        if data.rows_affected is not None:
            self.out.write(f"{data.rows_affected} row(s) affected\n")
        else:
            write_rows(data.columns, data.rows, self.format, self.out)
        self.out.flush()


async def run_shell(session: Any, database: str | None, stdin: TextIO = sys.stdin) -> int:
    interactive = stdin.isatty()
    readline = _readline()
    shell = Shell(session, sys.stdout, sys.stderr, database)
    if interactive:
        sys.stdout.write(
            f"sluice shell: {len(shell.catalog.names())} database(s); \\? for help, \\q to quit\n"
        )
    pending: list[str] = []
    try:
        while True:
            try:
                if interactive:
                    # blocking on purpose: nothing else runs while the user types
                    line = input(shell.prompt(bool(pending)))  # noqa: ASYNC250
                else:
                    line = stdin.readline()
                    if not line:
                        raise EOFError
                    line = line.rstrip("\n")
            except EOFError:
                break
            except KeyboardInterrupt:  # Ctrl-C drops the statement being typed, like psql
                pending = []
                sys.stdout.write("\n")
                continue
            if readline is not None and line.strip() and not interactive:
                readline.add_history(line)  # input() adds interactive lines itself
            if not pending and line.strip().startswith("\\"):
                if not await shell.command(line):
                    break
                continue
            if not pending and line.strip().lower() in ("exit", "quit"):
                break
            pending.append(line)
            if line.rstrip().endswith(";"):
                text = "\n".join(pending).rstrip().rstrip(";").strip()
                pending = []
                if text:
                    await shell.statement(text)
        if pending and "".join(pending).strip():  # a last statement without `;`
            await shell.statement("\n".join(pending).strip())
    finally:
        if readline is not None:
            _save_history(readline)
    return 0


def _readline() -> Any:
    try:
        import readline
    except ImportError:  # no readline (Windows): plain input, no history
        return None
    path = history_path()
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(HISTORY_LINES)
    return readline


def _save_history(readline: Any) -> None:
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError as exc:
        sys.stderr.write(f"sluice shell: could not save history to {path}: {exc.strerror}\n")

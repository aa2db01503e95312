"""The pieces of `sluice query` (and `sluice shell`) that are about the terminal: where the
query text comes from, which table it names, how rows are printed, where a result may be
written, and the progress display."""

from __future__ import annotations

import csv
import decimal
import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

FORMATS = ("table", "csv", "json", "ndjson")
MAX_CELL = 60  # a table cell wider than this is cut (csv/json/ndjson never are)


class CliInputError(Exception):
    """Bad command-line input, found before anything runs; the message says what to do."""


def query_text(positional: str | None, sql_file: str | None, stdin: TextIO) -> str | None:
    """The query: `--sql-file PATH` (`-` is stdin), the positional text (`-` is stdin), or
    None when neither was given."""
    source = sql_file if sql_file is not None else positional
    if source is None:
        return None
    if source == "-":
        text = stdin.read()
    elif sql_file is not None:
        try:
            text = Path(sql_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliInputError(f"cannot read {sql_file}: {exc.strerror}") from None
    else:
        return positional
    if not text.strip():
        raise CliInputError(f"the query read from {'stdin' if source == '-' else source} is empty")
    return text


def tables_named(text: str, db_type: str) -> list[str]:
    """The distinct tables a query reads or writes, as its database's language sees them
    (CTE names and table functions are not tables); [] when its language does not name
    tables in the text (MQL names its collection outside it). A syntax error is raised as
    CliInputError in the parser's words."""
    from connectors import registry
    from safety.languages import registry as languages

    connector = registry.get(db_type)
    language = languages.get(connector.language)
    analysis = language.analyse(text, connector.dialect)
    if analysis.error is not None and getattr(analysis, "invalid", False):
        raise CliInputError(analysis.error)  # a syntax error says so, not "which table?"
    if analysis.error is not None:
        return []
    names: list[str] = []
    for ref, _ in language.access(analysis, ""):
        if ref.display and ref.display not in names:
            names.append(ref.display)
    return names


def infer_table(text: str, db_type: str) -> str:
    """The one table a query names, for `-t`; a clear error when it names none or several."""
    names = tables_named(text, db_type)
    if len(names) == 1:
        return names[0]
    if not names:
        raise CliInputError(
            "cannot tell which table the query is about: give it with -t TABLE "
            "(needed when the query names no table, does not parse, or is not SQL)"
        )
    raise CliInputError(
        f"the query names {len(names)} tables ({', '.join(names)}): "
        "say which one it is about with -t TABLE"
    )


def output_format(target: str) -> str:
    """The export format of `-o target`, checked before anything runs: a known extension and
    a folder that exists and can be written."""
    from engine.export import format_for

    try:
        fmt = format_for(target)
    except ValueError as exc:
        raise CliInputError(str(exc)) from None
    folder = Path(target).parent.resolve()
    if not folder.is_dir():
        raise CliInputError(f"cannot write {target}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (Path(target).exists() and not os.access(target, os.W_OK)):
        raise CliInputError(f"cannot write {target}: permission denied")
    if Path(target).is_dir():
        raise CliInputError(f"cannot write {target}: it is a folder; give a file name")
    return fmt


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | decimal.Decimal) and not isinstance(v, bool)


def write_rows(columns: Sequence[str], rows: list[dict[str, Any]], fmt: str, out: Any) -> None:
    """Rows as a table (numbers right-aligned), CSV, a JSON array or NDJSON."""
    from api.envelopes import ENCODER

    if fmt == "ndjson":
        out.write("".join(ENCODER.encode(r).decode() + "\n" for r in rows))
        return
    if fmt == "json":
        out.write(ENCODER.encode(rows).decode() + "\n")
        return

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
    # a column is numeric when every value in it is a number (NULLs aside)
    numeric = [
        any(r[c] is not None for r in rows) and all(r[c] is None or _is_number(r[c]) for r in rows)
        for c in columns
    ]
    widths = [
        min(MAX_CELL, max([len(c)] + [len(row[i]) for row in cells])) for i, c in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        return " | ".join(
            v[:w].rjust(w) if num else v[:w].ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    buf = io.StringIO()
    buf.write(line(columns) + "\n")
    buf.write("-+-".join("-" * w for w in widths) + "\n")
    for row in cells:
        buf.write(line(row) + "\n")
    buf.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    out.write(buf.getvalue())


class Progress:
    """Progress of long work on stderr, per step: rows so far and rows per second.

    On a terminal the step lines are redrawn in place (at most ten times a second); otherwise
    nothing for the first second, then plain lines (at most one a second per step) and one
    when a step finishes, so logs stay readable."""

    QUIET_MS = 1000.0

    def __init__(self, out: Any, *, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.last: dict[str, float] = {}
        self.steps: dict[str, tuple[str, int, float]] = {}  # step -> (event, rows, at_ms)
        self.drawn = 0  # lines drawn last time (TTY)
        self.last_draw = 0.0

    def __call__(self, event: Any) -> None:
        if event.event == "native_query":
            return
        self.steps[event.step_id] = (event.event, event.rows, event.at_ms)
        if self.tty:
            now = time.monotonic()
            if event.event == "batch" and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            self._draw()
            return
        if event.at_ms < self.QUIET_MS or event.event == "started":
            return
        if event.event == "batch" and event.at_ms - self.last.get(event.step_id, -1e9) < 1000.0:
            return
        self.last[event.step_id] = event.at_ms
        print(self._line(event.step_id, event.event, event.rows, event.at_ms), file=self.out)

    @staticmethod
    def _line(step: str, event: str, rows: int, at_ms: float) -> str:
        state = {"batch": "running", "started": "started"}.get(event, event)
        rate = rows / (at_ms / 1000) if at_ms > 0 else 0.0
        return f"  {step}: {state:<9} {rows:>12,} rows  {rate:>12,.0f} rows/s  {at_ms / 1000:8.2f}s"

    def _draw(self) -> None:
        # move up over what was drawn, then rewrite every step line, clearing each
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        lines = [self._line(s, *v) for s, v in self.steps.items()]
        self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)

    def done(self) -> None:
        if self.tty and self.steps:
            self._draw()
        self.out.flush()


def stdout_closed() -> None:
    """The reader of stdout went away (`sluice query ... | head`): point stdout at devnull so
    the interpreter's final flush cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)

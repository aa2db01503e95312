"""Federated query documents (`sluice query -f dag.yaml`, run configs): YAML or JSON into a
FederatedQuery, with line-numbered errors like sluice.yaml's. Parsing and validating are two
steps with two errors, so the runs API can answer 400 for one and 422 for the other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from engine.config import problems_of
from engine.errors import ConfigError
from engine.ir import FederatedQuery
from engine.yaml_doc import load_yaml


class DagParseError(ConfigError):
    """Raised when the document is not valid YAML/JSON; `line`/`column` point at it."""

    code = "config_parse_error"

    def __init__(
        self,
        source: str,
        message: str,
        *,
        fmt: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(source, [f"{where}{message}"])
        self.format, self.line, self.column = fmt, line, column


class DagInvalid(ConfigError):
    """Raised when the document parses but is not a federated query (`steps`, `merge`)."""

    code = "invalid_config"


def parse_dag(text: str, fmt: str = "yaml", source: str = "dag.yaml") -> Any:
    """The document as data (YAML keeps line numbers for later errors). Raises DagParseError."""
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DagParseError(
                source, f"not valid JSON: {exc.msg}", fmt="json", line=exc.lineno, column=exc.colno
            ) from None
    try:
        return load_yaml(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DagParseError(
            source,
            f"not valid YAML: {exc.problem or exc.context}",
            fmt="yaml",
            line=None if mark is None else mark.line + 1,
            column=None if mark is None else mark.column + 1,
        ) from None
    except YAMLError as exc:
        raise DagParseError(source, f"not valid YAML: {exc}", fmt="yaml") from None


def to_query(doc: Any, source: str = "dag.yaml") -> FederatedQuery:
    """The federated query in a parsed document. Raises DagInvalid naming line and key."""
    if not isinstance(doc, dict):
        raise DagInvalid(
            source,
            ["(top level): expected a mapping with `steps` and `merge` (the POST /v1/query body)"],
        )
    try:
        return msgspec.convert(doc, FederatedQuery)
    except msgspec.ValidationError as err:
        raise DagInvalid(source, problems_of(doc, FederatedQuery)) from err


def load_dag_text(text: str, source: str = "dag.yaml", fmt: str = "yaml") -> FederatedQuery:
    return to_query(parse_dag(text, fmt, source), source)


def load_dag(path: str | Path) -> FederatedQuery:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read the file: {exc.strerror}"]) from exc
    return load_dag_text(text, str(p), "json" if p.suffix.lower() == ".json" else "yaml")

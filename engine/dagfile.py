"""DAG files (`sluice query -f dag.yaml`, run configs): YAML or JSON into a FederatedQuery,
with the same line-numbered errors as sluice.yaml."""

from __future__ import annotations

from pathlib import Path

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from engine.config import _explain
from engine.errors import ConfigError
from engine.ir import FederatedQuery


def load_dag_text(text: str, source: str = "dag.yaml") -> FederatedQuery:
    """Parse a federated query written in YAML (JSON is YAML too). Raises ConfigError."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(source, [f"{where}(yaml): {exc.problem or exc.context}"]) from exc
    if not isinstance(doc, dict):
        raise ConfigError(source, ["(top level): expected a mapping with `steps` and `merge`"])
    try:
        return msgspec.convert(doc, FederatedQuery)
    except msgspec.ValidationError as err:
        line, key, msg = _explain(err, doc, FederatedQuery, "")
        where = f"line {line}: " if line is not None else ""
        raise ConfigError(source, [f"{where}{key}: {msg}"]) from err


def load_dag(path: str | Path) -> FederatedQuery:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read the file: {exc.strerror}"]) from exc
    return load_dag_text(text, str(p))

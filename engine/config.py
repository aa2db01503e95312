"""sluice.yaml: read with ruamel.yaml, `${VAR}` interpolation, validated into msgspec Structs.

Errors name the file, the line, the key and what is allowed; every section is checked so one
run of `sluice validate` reports all the problems it can find, not only the first.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from connectors import registry
from connectors.config import Base, DatabaseConfig, PositiveFloat, PositiveInt, allowed_keys
from connectors.errors import UnknownConnector
from engine.errors import ConfigError
from engine.memory import SIZE_PATTERN
from engine.pg_pool import is_url
from engine.spark_settings import EngineConfig
from engine.yaml_doc import load_yaml
from safety.config import Permissions, SafetyConfig


class TokenConfig(Base, frozen=True):
    """A bearer token (or its sha256 hex) naming a principal, with an optional rate limit."""

    principal: str
    token: str | None = None
    token_sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    requests_per_minute: PositiveInt | None = None
    # this principal's bound on rows per step of an export or a run (default
    # safety.max_export_rows)
    max_export_rows: PositiveInt | None = None
    # sees (and may cancel or delete) every principal's runs and results; each use is audited
    admin: bool = False


class AuthConfig(Base, frozen=True):
    tokens: list[TokenConfig] = msgspec.field(default_factory=list)
    # wrong or missing tokens one client address may present a minute (429 past it)
    failed_attempts_per_minute: PositiveInt = 30


class ServerConfig(Base, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8787
    data_dir: str = ".sluice"
    body_limit_bytes: PositiveInt = 1_048_576
    result_ttl_seconds: PositiveFloat = 900.0
    max_results: PositiveInt = 1_000
    max_result_bytes: PositiveInt = 2 * 1024**3
    discovery_ttl_seconds: PositiveFloat = 300.0
    audit_log: str | None = None  # default: <data_dir>/audit.jsonl
    max_concurrent_queries_per_database: PositiveInt = 64
    max_concurrent_runs: PositiveInt = 4
    max_queued_runs: PositiveInt = 100
    run_store: str | None = None  # default: <data_dir>/runs.sqlite; or postgresql://...
    run_grace_seconds: PositiveFloat = 30.0
    idempotency_ttl_seconds: PositiveFloat = 86_400.0
    run_stale_seconds: PositiveFloat = 15.0
    run_log_lines: PositiveInt = 1_000
    allowed_hosts: list[str] | None = None  # Host names answered; default: loopback + host
    cors_origins: list[str] = msgspec.field(default_factory=list)  # browser apps allowed


class ResultsConfig(Base, frozen=True):
    """Where stored results live: `local` Parquet files under `<data_dir>/results`, or `s3`
    (an S3-compatible bucket, with its index in PostgreSQL) shared by many processes."""

    store: Literal["local", "s3"] = "local"
    endpoint: str | None = None  # http(s)://host:port of the S3-compatible server
    bucket: str | None = None
    prefix: Annotated[str, msgspec.Meta(pattern=r"^([A-Za-z0-9_.\-]+/)*$")] = "sluice/results/"
    region: str = "us-east-1"
    # the environment variables holding the credentials (never the yaml)
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 (a variable's name)
    index: str | None = None  # postgresql://...; default: server.run_store


# a size as DuckDB writes it: 512MB, 1GB, 2GiB (KB = 1000, KiB = 1024)
Size = Annotated[str, msgspec.Meta(pattern=SIZE_PATTERN)]


class LimitsConfig(Base, frozen=True):
    """Bounds on every piece of work one request can ask for (enforced while it grows)."""

    max_steps: PositiveInt = 64  # steps of one federated query or run
    max_dag_depth: PositiveInt = 16  # longest depends_on chain
    max_body_nesting: PositiveInt = 32  # nesting of a JSON body or a run config document
    max_run_seconds: PositiveFloat = 6 * 3600.0  # a run without timeout_secs, at most
    parse_timeout_seconds: PositiveFloat = 5.0  # a large run config parsed at most this long
    # the process's memory (RSS) budget, e.g. "1GB"; DuckDB's limits are sized from it
    # (engine/memory.py); default half the machine's memory
    memory_budget: Size | None = None
    merge_memory_limit: Size | None = None  # one merge's DuckDB memory_limit at most
    merge_temp_limit: Size = "10GB"  # spill files on disk in all (DuckDB temp + Parquet)
    spill_after_bytes: PositiveInt | None = None  # a step past this goes to Parquet
    max_inline_bytes: PositiveInt = 64 * 1024**2  # a simple answer's rows, encoded, at most
    max_concurrent_requests: PositiveInt = 512  # requests in progress in all (503 past it)
    max_concurrent_requests_per_principal: PositiveInt = 64  # per principal (429 past it)
    max_bytes_in_flight: PositiveInt = 256 * 1024**2  # request bodies and answers being built


class Config(Base, frozen=True):
    databases: list[DatabaseConfig] = msgspec.field(default_factory=list)
    safety: SafetyConfig = msgspec.field(default_factory=SafetyConfig)
    permissions: Permissions = msgspec.field(default_factory=Permissions)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    results: ResultsConfig = msgspec.field(default_factory=ResultsConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    source: str = "<defaults>"  # the file it came from, for messages

    def export_rows_for(self, principal: str | None) -> int:
        """The bound on rows per step of an export or a run for `principal`."""
        for token in self.auth.tokens:
            if token.principal == principal and token.max_export_rows is not None:
                return token.max_export_rows
        return self.safety.max_export_rows

    def database(self, name: str) -> DatabaseConfig | None:
        for db in self.databases:
            if db.name == name:
                return db
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every secret written in the config: database passwords and DSNs, bearer tokens."""
        found = [secret for db in self.databases for secret in db.secrets()]
        found += [token.token for token in self.auth.tokens if token.token]
        return tuple(found)


# One settings table: (key, default, help). tests/test_docs.py checks each is in the README.
SECTIONS: dict[str, type[Base]] = {
    "safety": SafetyConfig,
    "permissions": Permissions,
    "auth": AuthConfig,
    "server": ServerConfig,
    "limits": LimitsConfig,
    "results": ResultsConfig,
    "engine": EngineConfig,
}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _results_problems(values: Mapping[str, Any], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The shared result store needs a bucket, an index in PostgreSQL and its credentials
    in the environment."""
    results: ResultsConfig | None = values.get("results")
    if results is None or results.store != "s3":
        return []
    found: list[tuple[str, str]] = []
    if not results.bucket:
        found.append(("results.bucket", "`store: s3` needs a bucket"))
    server: ServerConfig = values.get("server") or ServerConfig()
    if not is_url(results.index or server.run_store):
        found.append(
            (
                "results.index",
                "`store: s3` keeps its index in PostgreSQL: set results.index or "
                "server.run_store to a postgresql://... URL",
            )
        )
    for key in ("access_key_env", "secret_key_env"):
        name = getattr(results, key)
        if not env.get(name):
            found.append(
                (f"results.{key}", f"environment variable {name} (the S3 credentials) is not set")
            )
    return found


class _Problems:
    """Every problem found, reported sorted by line (then path) whatever order found them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._found: list[tuple[int, str, str]] = []

    def add(self, line: int | None, key: str, message: str) -> None:
        self._found.append((line or 0, key, message))

    @property
    def items(self) -> list[str]:
        return [
            f"line {line}: {key}: {message}" if line else f"{key}: {message}"
            for line, key, message in sorted(self._found, key=lambda p: (p[0], p[1]))
        ]


def _line_of(node: Any, key: Any) -> int | None:
    try:
        if isinstance(node, CommentedMap):
            return int(node.lc.key(key)[0]) + 1
        if isinstance(node, CommentedSeq):
            return int(node.lc.item(key)[0]) + 1
    except (KeyError, IndexError, TypeError):
        return None
    return None


def _interpolate(node: Any, problems: _Problems, env: Mapping[str, str], where: str) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string scalar, keeping line info."""
    if isinstance(node, CommentedMap):
        for key in list(node):
            node[key] = _interpolate(node[key], problems, env, f"{where}.{key}".lstrip("."))
        return node
    if isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            node[i] = _interpolate(item, problems, env, f"{where}[{i}]")
        return node
    if isinstance(node, str) and "${" in node:
        missing: list[str] = []

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append(name)
            return ""

        value = _VAR.sub(sub, node)
        if missing:
            problems.add(
                None,
                where,
                f"environment variable {missing[0]} is not set "
                f"(write ${{{missing[0]}:-default}} to give a default)",
            )
        if _VAR.fullmatch(node.strip()):
            # a whole-scalar reference is typed like YAML would type the value itself
            typed = YAML(typ="safe").load(value) if value.strip() else None
            return typed if isinstance(typed, int | float | bool) else value
        return value
    return node


def _locate(node: Any, tp: Any, path: str, line: int | None) -> list[tuple[int | None, str, str]]:
    """Every problem of `node` as the type `tp`, each at its exact path and line: the
    document is walked next to the type (struct fields, dict keys, list items), so nothing
    is recovered from msgspec's message text, and one run reports them all."""
    try:
        msgspec.convert(node, tp)
        return []
    except msgspec.ValidationError as err:
        message = str(err).rsplit(" - at `", 1)[0]
    base = _unannotated(tp)
    origin = typing.get_origin(base)
    args = typing.get_args(base)
    found: list[tuple[int | None, str, str]] = []
    if isinstance(base, type) and issubclass(base, msgspec.Struct) and isinstance(node, dict):
        hints = typing.get_type_hints(base, include_extras=True)
        fields = {f.encode_name: f.name for f in msgspec.structs.fields(base)}
        tag_field = base.__struct_config__.tag_field
        for key in node:
            where = f"{path}.{key}" if path else str(key)
            at = _line_of(node, key) or line
            if key == tag_field:
                continue
            if key not in fields:
                allowed = ", ".join(allowed_keys(base))
                found.append((at, where, f"unknown key {key!r}; allowed keys: {allowed}"))
                continue
            found += _locate(node[key], hints[fields[key]], where, at)
    elif origin is dict and len(args) == 2 and isinstance(node, dict):
        for key in node:
            where = f"{path}.{key}" if path else str(key)
            found += _locate(node[key], args[1], where, _line_of(node, key) or line)
    elif origin is list and args and isinstance(node, list):
        for i, item in enumerate(node):
            found += _locate(item, args[0], f"{path}[{i}]", _line_of(node, i) or line)
    elif origin in (typing.Union, types.UnionType) and isinstance(node, dict):
        structs = [a for a in args if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        if len(structs) == 1:  # `R` or `{level: R, deny_columns: [...]}`: a mapping is the struct
            found += _locate(node, structs[0], path, line)
    if found:
        return found
    if "Invalid enum value" in message:
        choices = _choices(base)
        if choices:
            message = f"{message}; allowed: {', '.join(choices)}"
    return [(line, path or "(top level)", message)]


def _unannotated(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _choices(tp: Any) -> list[str]:
    """The values a Literal (or a union holding one) allows."""
    if typing.get_origin(tp) is Literal:
        return [str(a) for a in typing.get_args(tp)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [c for a in typing.get_args(tp) for c in _choices(_unannotated(a))]
    return []


def problems_of(node: Any, tp: Any, prefix: str = "") -> list[str]:
    """`node`'s problems as `tp`, formatted `line N: path: message` and sorted by line."""
    found = sorted(_locate(node, tp, prefix, None), key=lambda p: (p[0] or 0, p[1]))
    return [f"line {line}: {key}: {msg}" if line else f"{key}: {msg}" for line, key, msg in found]


def load_config_text(
    text: str, source: str = "sluice.yaml", env: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate config text. Raises ConfigError listing every problem found."""
    problems = _Problems(source)
    try:
        doc = load_yaml(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problems.add(line, "(yaml)", f"{exc.problem or exc.context}")
        raise ConfigError(source, problems.items) from exc
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ConfigError(
            source,
            [
                "(top level): expected a mapping of sections "
                "(databases, safety, permissions, auth, server)"
            ],
        )
    env = os.environ if env is None else env
    doc = _interpolate(doc, problems, env, "")

    allowed_top = ["databases", *SECTIONS]
    for key in doc:
        if key not in allowed_top:
            problems.add(
                _line_of(doc, key),
                str(key),
                f"unknown section; allowed sections: {', '.join(allowed_top)}",
            )

    values: dict[str, Any] = {}
    for section, tp in SECTIONS.items():
        if section not in doc:
            continue
        try:
            values[section] = msgspec.convert(doc[section], tp)
        except msgspec.ValidationError:
            for line, key, msg in _locate(doc[section], tp, section, _line_of(doc, section)):
                problems.add(line, key, msg)
    if "auth" in values:
        raw_tokens = doc["auth"].get("tokens") if isinstance(doc["auth"], CommentedMap) else None
        for i, token in enumerate(values["auth"].tokens):
            if (token.token is None) == (token.token_sha256 is None):
                problems.add(
                    _line_of(raw_tokens, i),
                    f"auth.tokens[{i}]",
                    "give exactly one of `token` (e.g. ${SLUICE_TOKEN}) or `token_sha256`",
                )

    for key, message in _results_problems(values, env):
        problems.add(_line_of(doc, "results"), key, message)
    spark = values["engine"].spark if "engine" in values else None
    if spark is not None and (problem := spark.problem()) is not None:
        raw_engine = doc["engine"].get("spark") if isinstance(doc["engine"], CommentedMap) else None
        problems.add(_line_of(raw_engine, "staging"), "engine.spark.staging", problem)

    databases: list[DatabaseConfig] = []
    raw_dbs = doc.get("databases")
    if raw_dbs is not None and not isinstance(raw_dbs, CommentedSeq):
        problems.add(
            _line_of(doc, "databases"),
            "databases",
            "expected a list of databases (each item starts with '- name: ...')",
        )
    else:
        seen: dict[str, int | None] = {}
        for i, item in enumerate(raw_dbs or []):
            db = _database(item, i, raw_dbs, problems)
            if db is None:
                continue
            line = _line_of(raw_dbs, i)
            if db.name in seen:
                problems.add(
                    line,
                    f"databases[{i}].name",
                    f"duplicate database name {db.name!r} (first defined on line "
                    f"{seen[db.name]}); names must be unique",
                )
                continue
            seen[db.name] = line
            problem = db.problem()
            if problem:
                problems.add(line, f"databases[{i}]", problem)
            databases.append(db)

    if problems.items:
        raise ConfigError(source, problems.items)
    return Config(databases=databases, source=source, **values)


def _database(item: Any, i: int, raw_dbs: Any, problems: _Problems) -> DatabaseConfig | None:
    """One `databases` entry decoded with the settings struct of its connector type."""
    kind = item.get("type") if isinstance(item, CommentedMap) else None
    if kind is None:
        problems.add(
            _line_of(raw_dbs, i),
            f"databases[{i}]",
            f"Object missing required field `type`; allowed types: {', '.join(registry.names())}",
        )
        return None
    try:
        struct = registry.settings_type(str(kind))
    except UnknownConnector:
        close = difflib.get_close_matches(str(kind), registry.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.add(
            _line_of(item, "type") or _line_of(raw_dbs, i),
            f"databases[{i}].type",
            f"Invalid enum value {kind!r}{hint}; allowed types: {', '.join(registry.names())}",
        )
        return None
    try:
        return msgspec.convert(item, struct)
    except msgspec.ValidationError:
        for line, key, msg in _locate(item, struct, f"databases[{i}]", _line_of(raw_dbs, i)):
            problems.add(line, key, msg)
        return None


def grant_warnings(
    config: Config, doc: Any = None, discovered: Mapping[str, Iterable[str]] | None = None
) -> list[str]:
    """Grants that name nothing: a database that is not configured, or (given what
    discovery found per database, as `sluice doctor` does) a table that is not there.
    Formatted `line N: path: message` (lines from the raw `doc`), sorted."""
    names = [db.name for db in config.databases]
    sets = [(["default"], config.permissions.default)]
    sets += [(["principals", p], s) for p, s in config.permissions.principals.items()]
    found: list[tuple[int, str, str]] = []
    for where, permission_set in sets:
        for db_name, policy in permission_set.items():
            keys = ["permissions", *where, db_name]
            if db_name not in names:
                close = difflib.get_close_matches(db_name, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                found.append(
                    (
                        _line_at(doc, keys),
                        ".".join(keys),
                        f"grants on database {db_name!r}, which is not configured{hint}",
                    )
                )
                continue
            tables = None if discovered is None else discovered.get(db_name)
            if tables is None:
                continue
            known = {t.lower() for t in tables} | {t.lower().rsplit(".", 1)[-1] for t in tables}
            for table in policy.tables:
                if table.lower() in known:
                    continue
                close = difflib.get_close_matches(table, sorted(tables), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                found.append(
                    (
                        _line_at(doc, [*keys, "tables", table]),
                        ".".join([*keys, "tables", table]),
                        f"grants on table {table!r}, which {db_name!r} does not have{hint}",
                    )
                )
    return [
        f"line {line}: {path}: {msg}" if line else f"{path}: {msg}"
        for line, path, msg in sorted(found, key=lambda f: (f[0], f[1]))
    ]


def _line_at(doc: Any, keys: list[str]) -> int:
    """The line of the last key along `keys` in a round-trip YAML document (0: unknown)."""
    line = 0
    node = doc
    for key in keys:
        line = _line_of(node, key) or line
        node = node.get(key) if isinstance(node, dict) else None
    return line


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a sluice.yaml file; relative file paths resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read the file: {exc.strerror}"]) from exc
    config = load_config_text(text, str(p), env)
    return _resolve_paths(config, p.parent)


def _resolve_paths(config: Config, base: Path) -> Config:
    def fix(value: str) -> str:
        return value if os.path.isabs(value) else str((base / value).resolve())

    dbs = [db.resolved(base) for db in config.databases]
    server = msgspec.structs.replace(config.server, data_dir=fix(config.server.data_dir))
    if server.audit_log:
        server = msgspec.structs.replace(server, audit_log=fix(server.audit_log))
    return msgspec.structs.replace(config, databases=dbs, server=server)

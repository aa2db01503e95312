"""The permission model: which operations a level grants, and which policy entry applies.

Levels (sluice.yaml `permissions`), as operation classes:

| level | SELECT | INSERT/UPDATE/DELETE (with WHERE) | DDL | DELETE/UPDATE without WHERE |
|-------|--------|-----------------------------------|-----|-----------------------------|
| none  |        |                                   |     |                             |
| R     | yes    |                                   |     |                             |
| W     |        | yes                               |     |                             |
| RW    | yes    | yes                               |     |                             |
| A     |        |                                   | yes |                             |
| RA    | yes    |                                   | yes |                             |
| RWA   | yes    | yes                               | yes | yes                         |

A (admin) is a flag on top of the others: DDL (CREATE/ALTER/DROP/TRUNCATE of tables, views,
indexes) and an unbounded DELETE/UPDATE (no WHERE, or a WHERE that is always true), which
also needs W. A write's own WHERE may read the target table under W alone; a RETURNING
clause returns rows, so it also needs R.

Which entry applies to a table (names compared case-insensitively):
1. `principals.<p>` when the request has a principal listed there, else `default`.
2. The database's `tables` entry for the name as written (`public.users`, `users`).
3. A schema-qualified name in the database's default schema (PostgreSQL `public`,
   SQLite/DuckDB `main`, MySQL the configured database) falls back to the bare entry
   (`public.users` -> `users`); a table in another schema never does, so `audit.users` is
   not covered by a `users` entry.
4. Else the database's baseline `level`; a database absent from the set is `none`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from safety.config import DatabasePolicy, TablePolicy

if TYPE_CHECKING:
    from safety.config import CheckConfig, Level, PermissionSet

_MEMO_ENTRIES = 1024  # grants remembered per database policy
# The extra class an unbounded DELETE/UPDATE needs on top of its own.
UNBOUNDED = "UNBOUNDED"
# A target that may be any table of the database (an unlabeled graph pattern, a metadata
# procedure): the database's baseline and every one of its table entries must allow it.
EVERY_TABLE = "*"

GRANTS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "R": frozenset({"SELECT"}),
    "W": frozenset({"INSERT", "UPDATE", "DELETE"}),
    "RW": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"}),
    "A": frozenset({"DDL"}),
    "RA": frozenset({"SELECT", "DDL"}),
    "RWA": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "DDL", UNBOUNDED}),
}


@dataclass(frozen=True, slots=True)
class TableGrant:
    """What the policy says about one table, and the entry that said it."""

    level: Level
    deny_columns: frozenset[str]
    entry: str  # e.g. "permissions.default.demo.tables.users"
    tables_path: str  # where to add a table entry, for suggestions

    @property
    def label(self) -> str:
        return f"{self.entry}={self.level}"

    def allows(self, operation: str) -> bool:
        return operation in GRANTS[self.level]


@dataclass(frozen=True, slots=True)
class DatabaseGrants:
    """One database's policy with its table entries indexed by lower-cased name."""

    prefix: str  # "permissions.default.demo"
    level: Level
    present: bool
    tables: dict[str, tuple[str, Level, frozenset[str]]]  # lower name -> (key, level, denies)
    default_schemas: tuple[str, ...]
    # answers so far (a lookup per table and column use is on every request's path);
    # bounded: names come from queries
    _memo: dict[tuple[str, str, str], TableGrant] = field(
        default_factory=dict, compare=False, repr=False
    )

    def lookup(self, name: str, schema: str = "", catalog: str = "") -> TableGrant:
        """The grant for a table as written in the query (schema/catalog may be empty)."""
        key = (name, schema, catalog)
        grant = self._memo.get(key)
        if grant is None:
            grant = self._lookup(name, schema, catalog)
            if len(self._memo) < _MEMO_ENTRIES:
                self._memo[key] = grant
        return grant

    def _lookup(self, name: str, schema: str, catalog: str) -> TableGrant:
        tables_path = f"{self.prefix}.tables"
        if name == EVERY_TABLE and not schema and not catalog:
            return self._every_table(tables_path)
        full = ".".join(p for p in (catalog, schema, name) if p).lower()
        hit = self.tables.get(full)
        if hit is None and not catalog and (not schema or schema.lower() in self.default_schemas):
            hit = self.tables.get(name.lower())
        if hit is not None:
            key, level, denies = hit
            return TableGrant(level, denies, f"{tables_path}.{key}", tables_path)
        if not self.present:
            return TableGrant("none", frozenset(), f"{self.prefix} (absent)", tables_path)
        return TableGrant(self.level, frozenset(), f"{self.prefix}.level", tables_path)

    def _every_table(self, tables_path: str) -> TableGrant:
        """The strictest of the baseline and all table entries (their denies combined)."""
        if not self.present:
            return TableGrant("none", frozenset(), f"{self.prefix} (absent)", tables_path)
        ops = GRANTS[self.level]
        denies: set[str] = set()
        entries = [f"{self.prefix}.level={self.level}"]
        for key, level, deny in self.tables.values():
            if not GRANTS[self.level] <= GRANTS[level] or deny:
                entries.append(f"tables.{key}={level}")
            ops &= GRANTS[level]
            denies |= deny
        strictest: Level = next((lv for lv, g in _BY_SIZE if g == ops), "none")
        return TableGrant(strictest, frozenset(denies), " and ".join(entries), tables_path)


# levels from the widest grant down: the first equal to an intersection names it
_BY_SIZE: list[tuple[Level, frozenset[str]]] = sorted(
    GRANTS.items(),  # type: ignore[arg-type]  # GRANTS is keyed by every Level
    key=lambda kv: -len(kv[1]),
)

_GRANTS_CACHE: dict[
    tuple[int, str | None, str, tuple[str, ...]], tuple[object, DatabaseGrants]
] = {}


def database_grants(
    config: CheckConfig, principal: str | None, database: str, default_schemas: tuple[str, ...]
) -> DatabaseGrants:
    """The grants for one database under a principal (cached per config object).
    `default_schemas`: where an unqualified name lives (the connector settings say)."""
    key = (id(config), principal, database, default_schemas)
    cached = _GRANTS_CACHE.get(key)
    if cached is not None and cached[0] is config:
        return cached[1]
    pset, prefix = permission_set(config, principal)
    policy = pset.get(database)
    grants = DatabaseGrants(
        prefix=f"{prefix}.{database}",
        level=policy.level if policy is not None else "none",
        present=policy is not None,
        tables=_index(policy),
        default_schemas=default_schemas,
    )
    if len(_GRANTS_CACHE) > 4096:  # configs are few and long-lived; never grow unbounded
        _GRANTS_CACHE.clear()
    _GRANTS_CACHE[key] = (config, grants)
    return grants


def permission_set(config: CheckConfig, principal: str | None) -> tuple[PermissionSet, str]:
    """`principals.<p>` when listed, else `default` (documented in the module docstring)."""
    if principal is not None and principal in config.permissions.principals:
        return config.permissions.principals[principal], f"permissions.principals.{principal}"
    return config.permissions.default, "permissions.default"


def _index(policy: DatabasePolicy | None) -> dict[str, tuple[str, Level, frozenset[str]]]:
    out: dict[str, tuple[str, Level, frozenset[str]]] = {}
    if policy is None:
        return out
    for key, entry in policy.tables.items():
        if isinstance(entry, TablePolicy):
            out[key.lower()] = (key, entry.level, frozenset(c.lower() for c in entry.deny_columns))
        else:
            out[key.lower()] = (key, entry, frozenset())
    return out


def level_for(operations: set[str]) -> str:
    """The smallest level naming `operations`, for suggestions ("add `t: RW`")."""
    for level in ("R", "W", "A", "RW", "RA", "RWA"):
        if operations <= GRANTS[level]:
            return level
    return "RWA"

"""Database type -> connector class, loaded through the `sluice.connectors` entry points.

Built-ins are registered in pyproject.toml exactly as a plugin package would register its own:

    [project.entry-points."sluice.connectors"]
    postgresql = "connectors.postgres:PostgresConnector"

An entry point is imported on first use, so an unused driver costs nothing at start.
`register()` adds a class at run time (tests, embedding); it takes precedence over an entry
point of the same name.
"""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, cast

import msgspec

from connectors.errors import UnknownConnector

if TYPE_CHECKING:
    from connectors.base import Connector
    from connectors.config import DatabaseConfig

GROUP = "sluice.connectors"

_registered: dict[str, type[Connector]] = {}
_loaded: dict[str, type[Connector]] = {}
_entry_points: dict[str, EntryPoint] | None = None


def _points() -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None:
        _entry_points = {ep.name: ep for ep in entry_points(group=GROUP)}
    return _entry_points


def register(type_name: str, cls: type[Connector]) -> None:
    """Make `type_name` (a config `type`) build `cls`; `cls.settings` must hold a struct
    tagged `type_name`."""
    _settings_of(type_name, cls)
    _registered[type_name] = cls


def unregister(type_name: str) -> None:
    """Forget a class added with `register()` (entry points stay)."""
    _registered.pop(type_name, None)


def names() -> list[str]:
    """Every known database type: entry points in their declared order, then registered."""
    return list(dict.fromkeys([*_points(), *_registered]))


def get(type_name: str) -> type[Connector]:
    """The connector class for a config `type`; an unknown name gets a "did you mean"."""
    cls = _registered.get(type_name) or _loaded.get(type_name)
    if cls is not None:
        return cls
    ep = _points().get(type_name)
    if ep is None:
        raise UnknownConnector(unknown_type_message(type_name))
    cls = cast("type[Connector]", ep.load())
    _settings_of(type_name, cls)
    _loaded[type_name] = cls
    return cls


def unknown_type_message(type_name: str) -> str:
    known = names()
    close = difflib.get_close_matches(type_name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown database type {type_name!r}{hint} known: {', '.join(known)}"


def settings_type(type_name: str) -> type[DatabaseConfig]:
    """The settings struct a `databases` entry of this type decodes into."""
    return _settings_of(type_name, get(type_name))


def database_config(**fields: Any) -> DatabaseConfig:
    """Settings from keyword fields, `type` included: `database_config(name="pg",
    type="postgresql", dsn=...)` (what the config loader does for one `databases` entry)."""
    return msgspec.convert(fields, settings_type(str(fields.get("type"))))


def create(config: DatabaseConfig) -> Connector:
    """Build (not open) the connector for one configured database."""
    return get(config.type)(config)


def _settings_of(type_name: str, cls: type[Connector]) -> type[DatabaseConfig]:
    for struct in cls.settings:
        if struct.__struct_config__.tag == type_name:
            return struct
    raise TypeError(f"{cls.__name__}.settings has no struct tagged {type_name!r}")

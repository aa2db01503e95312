"""Language name -> `Language` object, loaded through the `sluice.languages` entry points.

Built-ins are registered in pyproject.toml exactly as a plugin package registers its own:

    [project.entry-points."sluice.languages"]
    sql = "safety.languages.sql:SqlLanguage"

The entry point names a `Language` subclass; it is instantiated once, on first use.
`register()` adds one at run time (tests, embedding) and wins over an entry point.
"""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safety.languages.base import Language

GROUP = "sluice.languages"

_registered: dict[str, Language] = {}
_loaded: dict[str, Language] = {}
_entry_points: dict[str, EntryPoint] | None = None


class UnknownLanguage(LookupError):
    """No language is registered under this name."""


def _points() -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None:
        _entry_points = {ep.name: ep for ep in entry_points(group=GROUP)}
    return _entry_points


def register(language: Language) -> None:
    """Make `language` available under `language.name`."""
    _registered[language.name] = language


def unregister(name: str) -> None:
    _registered.pop(name, None)


def names() -> list[str]:
    """Every known language: entry points in their declared order, then registered ones."""
    return list(dict.fromkeys([*_points(), *_registered]))


def known(name: str) -> bool:
    return name in _registered or name in _loaded or name in _points()


def mismatch(
    requested: str | None, spoken: str | None, database: str, db_type: str
) -> tuple[str, str] | None:
    """(reason, suggestion) when a step asks for a language its database does not speak.
    PROMPT_GUARD is its one caller: a malformed request, answered 400 on every path."""
    if requested is None or requested == spoken:
        return None
    if not known(requested):
        return (
            f"unknown language {requested!r}",
            f"use one of {', '.join(names())}, or omit it to infer it from the database "
            f"({database!r} speaks {spoken})",
        )
    return (
        f"language {requested!r} does not match database {database!r}, a {db_type} "
        f"database that speaks {spoken}",
        f"send language {spoken!r} or omit it",
    )


def get(name: str) -> Language:
    """The language object; an unknown name raises UnknownLanguage with a "did you mean"."""
    found = _registered.get(name) or _loaded.get(name)
    if found is not None:
        return found
    ep = _points().get(name)
    if ep is None:
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownLanguage(f"unknown language {name!r}{hint} known: {', '.join(names())}")
    language: Language = ep.load()()
    _loaded[name] = language
    return language

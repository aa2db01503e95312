"""The body shapes each language object gives (`examples`, listed in the MCP tools'
descriptions) are bodies its own analysis accepts, for every connector that speaks it."""

from __future__ import annotations

from importlib.metadata import entry_points

from connectors import registry as connectors
from safety.languages import registry as languages


def test_every_example_is_a_body_its_language_accepts():
    checked = 0
    for type_name in connectors.names():
        cls = connectors.get(type_name)
        language = languages.get(cls.language)
        for example in language.examples:
            analysis = language.analyse(example, cls.dialect)
            assert analysis.error is None, (type_name, example, analysis.error)
            checked += 1
    assert checked >= 5 * 3  # sql on four SQL databases, mql on one


def test_every_installed_language_gives_examples():
    """A language without them would leave agents guessing its body shape."""
    installed = [ep.name for ep in entry_points(group=languages.GROUP)]
    assert {"sql", "mql"} <= set(installed)
    missing = [n for n in installed if not languages.get(n).examples]
    assert not missing, f"languages without `examples`: {missing}"


def test_an_invalid_body_would_be_caught():
    sql = languages.get("sql")
    assert sql.analyse("SELEC id FRM users", "postgres").error is not None

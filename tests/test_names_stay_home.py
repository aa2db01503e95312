"""Everything sluice knows about one database type lives in its connector module, about one
query language in its language module: outside them, no non-test code names a database type,
a dialect or a language (as a string constant; docstrings and comments may explain).

Own modules, found from the registries (so a plugin's modules are covered the same way):
- a connector: the module defining the registered class, and modules beside it named
  `<that module>_*.py` (connectors/mongo.py owns connectors/mongo_query.py). It may name its
  type names, its language and its dialect.
- a language: the module defining the registered Language class, and `<module>_*.py` beside
  it (safety/languages/sql.py owns sql_parse.py...). It may name itself and the dialects of
  the connectors that speak it (sqlglot dialects are SQL's knowledge).
`ELSEWHERE` lists the few other modules allowed a name, each with its reason.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from connectors import registry as connectors
from safety.languages import registry as languages

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "engine", "safety", "connectors", "sluice")
# Named in ../shared/LANGUAGES.md before their modules exist, and common spellings of types.
UPCOMING = {"es_dsl", "couchdb", "dynamo", "dynamodb", "cypher", "neo4j", "vector",
            "elasticsearch", "postgres", "mongo", "mariadb"}  # fmt: skip
ELSEWHERE: dict[str, dict[str, str]] = {
    # DuckDB is the engine's merge and sink database by design, not a configured database
    "engine/merge.py": {"duckdb": "merge SQL is parsed and written as DuckDB SQL"},
    "engine/federated.py": {"duckdb": "a sink failure names the DuckDB sink"},
    # a merge handed to Spark is transpiled from DuckDB SQL; a request may choose either
    "engine/spark_sql.py": {"duckdb": "the merge's source dialect for sqlglot"},
    "engine/ir.py": {"duckdb": 'the "engine" a request may ask its merge to run on'},
    # the body of the vector language, shared by its three connectors (pgvector, Qdrant,
    # LanceDB): "vector" there is the key holding a query vector
    "connectors/vector_query.py": {"vector": "the body key of a query or point vector"},
}


def _module_file(module: str) -> Path:
    return Path(sys.modules[module].__file__ or "").resolve()


def _owned(defining: Path) -> list[Path]:
    return [defining, *defining.parent.glob(f"{defining.stem}_*.py")]


def allowed_names() -> tuple[set[str], dict[Path, set[str]]]:
    every: set[str] = set(UPCOMING)
    own: dict[Path, set[str]] = {}
    dialects: dict[str, set[str]] = {}
    for type_name in connectors.names():
        cls = connectors.get(type_name)
        mine = {type_name, cls.language, cls.dialect}
        mine |= {s.__struct_config__.tag for s in cls.settings}
        every |= mine
        dialects.setdefault(cls.language, set()).add(cls.dialect)
        for path in _owned(_module_file(cls.__module__)):
            own.setdefault(path, set()).update(mine)
    for name in languages.names():
        language = languages.get(name)
        every.add(name)
        for path in _owned(_module_file(type(language).__module__)):
            own.setdefault(path, set()).update({name, *dialects.get(name, ())})
    for rel, names in ELSEWHERE.items():
        own.setdefault((ROOT / rel).resolve(), set()).update(names)
    return {n.lower() for n in every}, own


def string_constants(tree: ast.AST) -> list[ast.Constant]:
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = body[0] if body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_no_database_or_language_name_outside_its_own_modules() -> None:
    names, own = allowed_names()
    assert {"postgresql", "mysql", "sqlite", "duckdb", "mongodb", "sql", "mql"} <= names
    found: list[str] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            path = path.resolve()
            allowed = own.get(path, set())
            for node in string_constants(ast.parse(path.read_text(), str(path))):
                value = node.value.strip().lower()
                if value in names and value not in allowed:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "database/language names outside their own modules:\n" + "\n".join(found)


def test_the_check_sees_a_misplaced_name(tmp_path: Path) -> None:
    names, _ = allowed_names()
    tree = ast.parse('"""mysql in a docstring is fine"""\nif kind == "mql":\n    pass\n')
    hits = [n.value for n in string_constants(tree) if n.value.lower() in names]
    assert hits == ["mql"]

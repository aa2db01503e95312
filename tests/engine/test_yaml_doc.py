"""Every YAML document is read into plain Python scalars (no ruamel subclasses)."""

from __future__ import annotations

import msgspec

from engine.config import load_config_text
from engine.dagfile import load_dag_text
from engine.yaml_doc import load_yaml

DOC = """\
folded: >
  SELECT 1
  FROM t
literal: |
  SELECT 2
hex: 0x10
under: 1_000
float: 1.5e3
flag: true
tagged: !custom text
items:
  - >-
    nested
"""


def test_every_scalar_is_a_plain_type() -> None:
    doc = load_yaml(DOC)
    for key, value in doc.items():
        items = value if key == "items" else [value]
        for v in items:
            assert type(v) in (str, int, float, bool), (key, type(v))
    assert doc["folded"] == "SELECT 1 FROM t\n" and doc["hex"] == 16 and doc["under"] == 1000
    assert doc.lc.key("literal")[0] == 3  # line numbers survive for error messages
    msgspec.json.encode(doc)


def test_dag_and_config_with_block_scalars_encode() -> None:
    q = load_dag_text(
        "steps:\n  - step_id: a\n    database: x\n    table: t\n    query: |\n"
        "      SELECT *\n      FROM t\nmerge: >\n  SELECT * FROM a\n"
    )
    assert type(q.steps[0].query) is str and type(q.merge) is str
    assert msgspec.json.decode(msgspec.json.encode(q))["merge"] == "SELECT * FROM a\n"
    config = load_config_text(
        "databases:\n  - name: lite\n    type: sqlite\n    path: >-\n      x.db\n"
    )
    assert type(config.databases[0].path) is str
    msgspec.json.encode(config)

"""YAML documents (sluice.yaml, dag.yaml, run configs) read one way: round-trip, so errors can
name lines, but with every scalar a plain Python value.

ruamel's round-trip loader returns str/int/float subclasses (`query: >` is a
FoldedScalarString, `0x10` a HexInt) that msgspec passes through unchanged and then cannot
encode; converting them here, once, keeps them out of every later path."""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.compat import ordereddict


def load_yaml(text: str) -> Any:
    """The document as CommentedMap/CommentedSeq (line numbers kept) of plain scalars.
    Raises ruamel's YAMLError subclasses for text that is not YAML."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return plain_scalars(yaml.load(text))


def plain_scalars(node: Any) -> Any:
    """Replace ruamel's scalar subclasses with str/int/float in place; containers (and their
    line information) are kept. The base classes' __setitem__ is used because ruamel's own
    re-wraps a plain str in the scalar type it replaces."""
    if isinstance(node, CommentedMap):
        for key in list(node):
            ordereddict.__setitem__(node, key, plain_scalars(node[key]))
        return node
    if isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            list.__setitem__(node, i, plain_scalars(item))
        return node
    if isinstance(node, TaggedScalar):
        return plain_scalars(node.value)
    if isinstance(node, bool) or node is None:
        return node
    for base in (str, int, float):
        if isinstance(node, base) and type(node) is not base:
            return base(node)
    return node

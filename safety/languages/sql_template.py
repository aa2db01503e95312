"""Statement templates: a query that differs from a checked one only in inert literals reuses
its analysis and its rewrite, and on PostgreSQL runs as the same prepared statement.

    hit = match(dialect, text)        # None: analyse and rewrite the text as usual
    hit.analysis                      # the template's SqlAnalysis, valid for this text
    hit.rewrite(fetch)                # Rewrite(text, run_text, params) or None
    learn(dialect, text, analysis, fetch, rewritten, link_text)   # after a full check

The key is the text's token stream with integer and string literals replaced by their kind
(int4, int8, string); comments, keywords, identifiers and every other literal stay in it.
A literal is *inert*, and may differ between texts sharing a template, only where no stage
can read its value: an operand of `=`, `<>`, `<`, `<=`, `>`, `>=`, `IN (...)` or
`BETWEEN` whose other side is a column. Every other literal (LIMIT/OFFSET, a function
argument naming a file or setting, both sides of `1 = 1`, anything GUARDRAILS reads) is
pinned: texts that differ in one get different templates, so each is checked on its own.

A template is learned from the second text of a shape that went through the whole pipeline
(a one-off text never pays for it): the text is
re-analysed with every inert literal replaced by a sentinel, and the template is kept only
if that analysis has the same findings, tables, columns and warnings as the real one and
rendering the real values back reproduces the real rewrite exactly. Shapes that fail
(a warning that quotes a literal, say) are remembered and not tried again.

On PostgreSQL the inert integers of the rewrite become `$n::int4` / `$n::int8` parameters,
the type PostgreSQL gives the same literal, so `WHERE id = 4711` and `WHERE id = 4712` are
one prepared statement (asyncpg's statement cache and the server's plan cache hit). Inert
plain strings become untyped `$n` parameters, typed by PostgreSQL from the column as the
literal was; the connector runs the inline text instead when that type does not take a
Python str (a date, an enum, an integer column). Other dialects get the rendered text.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import Tokenizer, TokenType, exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError

from safety.languages.sql_analysis import analyse_sql
from safety.languages.sql_parse import Parsed
from safety.languages.sql_rewrite import rewrite_sql
from safety.text_cache import CACHE_MAX_CHARS

if TYPE_CHECKING:
    from safety.languages.sql_analysis import SqlAnalysis

TEMPLATE_KEYS = 1024  # token shapes remembered (each holds a few templates)
TEMPLATES_PER_KEY = 4  # templates for one shape (they differ in pinned literals)
FAILURES_PER_KEY = 4  # a shape that fails to learn this often is not tried again
_INT4_MAX = 2**31 - 1
_INT8_MAX = 2**63 - 1
_STRING = "string"
_INT4 = "int4"
_INT8 = "int8"
# dialects whose connector binds `$n` parameters (asyncpg)
_BINDS: frozenset[str] = frozenset({"postgres"})
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """The checked text (literals inline, as the audit and dry runs show it), and what the
    connector runs: the same statement with inert integers bound as parameters."""

    text: str
    run_text: str
    params: tuple[Any, ...]
    link_text: str


@dataclass(slots=True)
class _Render:
    """A rewrite split at its slots: pieces[0] slot0 pieces[1] slot1 ... pieces[n]."""

    pieces: tuple[str, ...]
    slots: tuple[int, ...]  # literal index for each slot
    link_pieces: tuple[str, ...]
    link_slots: tuple[int, ...]


@dataclass(slots=True)
class Template:
    dialect: str
    analysis: SqlAnalysis
    inert: tuple[bool, ...]  # per literal
    pinned: tuple[str, ...]  # the pinned literals' source texts, in order
    probe: str  # the text the analysis was computed from (inert literals as sentinels)
    sentinels: tuple[str, ...]  # per literal: its sentinel as the generator writes it
    renders: dict[int | None, _Render | None] = field(default_factory=dict)


@dataclass(slots=True)
class Hit:
    """One text matched to a template. A repeated text gets the same Hit back (match keeps
    the last few), so its analysis and rewrite are built once."""

    template: Template
    literals: tuple[Literal, ...]
    _bound: SqlAnalysis | None = None
    _rewrites: dict[int | None, Rewrite] = field(default_factory=dict)

    @property
    def analysis(self) -> SqlAnalysis:
        return self.template.analysis

    def bound_analysis(self) -> SqlAnalysis:
        """The template's analysis carrying this hit (the rewrite renders it)."""
        if self._bound is None:
            self._bound = dataclasses.replace(self.template.analysis, template=self)
        return self._bound

    def rewrite(self, fetch: int | None) -> Rewrite | None:
        """The rewrite for this text, or None when this fetch has no render yet."""
        done = self._rewrites.get(fetch)
        if done is None:
            done = self._render(fetch)
            if done is not None and len(self._rewrites) < 4:
                self._rewrites[fetch] = done
        return done

    def _render(self, fetch: int | None) -> Rewrite | None:
        render = self.template.renders.get(fetch)
        if render is None:
            return None
        values = [_inline(self.template.dialect, lit) for lit in self.literals]
        text = _join(render.pieces, render.slots, values)
        link = _join(render.link_pieces, render.link_slots, values)
        if self.template.dialect not in _BINDS:
            return Rewrite(text, text, (), link)
        params: list[Any] = []
        bound = list(values)
        for i, lit in enumerate(self.literals):
            if not self.template.inert[i]:
                continue
            if lit[0] != _STRING:
                params.append(int(lit[1]))
                bound[i] = f"${len(params)}::{lit[0]}"
            elif _plain(lit):
                # untyped: PostgreSQL gives it the column's type, as it does the literal;
                # the connector runs `text` instead unless that type takes a Python str
                params.append(lit[1])
                bound[i] = f"${len(params)}"
        if not params:
            return Rewrite(text, text, (), link)
        return Rewrite(text, _join(render.pieces, render.slots, bound), tuple(params), link)


@dataclass(slots=True)
class _Shape:
    templates: list[Template] = field(default_factory=list)
    failures: int = 0
    seen: int = 0  # checks of a text of this shape so far; learning starts at the second


Literal = tuple[str, str, str, int, int]  # (kind, token text, source text, start, end + 1)

_shapes: OrderedDict[tuple[Any, ...], _Shape] = OrderedDict()
_hits: OrderedDict[tuple[str, str], Hit] = OrderedDict()  # (dialect, text) -> its hit
HITS_KEPT = 256
_lock = threading.Lock()


def match(dialect: str, text: str) -> Hit | None:
    """The template this text shares with a checked one, if any."""
    if len(text) > CACHE_MAX_CHARS:
        return None
    with _lock:
        hit = _hits.get((dialect, text))
        if hit is not None:
            _hits.move_to_end((dialect, text))
            return hit
    shaped = _shape_of(dialect, text)
    if shaped is None:
        return None
    key, literals = shaped
    with _lock:
        shape = _shapes.get(key)
        if shape is None:
            return None
        _shapes.move_to_end(key)
        templates = list(shape.templates)
    for t in templates:
        pinned = tuple(lit[2] for lit, inert in zip(literals, t.inert, strict=True) if not inert)
        if pinned == t.pinned:
            hit = Hit(t, literals)
            with _lock:
                _hits[(dialect, text)] = hit
                while len(_hits) > HITS_KEPT:
                    _hits.popitem(last=False)
            return hit
    return None


def learn(
    dialect: str,
    text: str,
    analysis: SqlAnalysis,
    fetch: int | None,
    rewritten: str,
    link_text: str,
) -> None:
    """Remember the template of `text`, which passed the pipeline with `analysis` and was
    rewritten to `rewritten` (and `link_text` without the cap); a no-op when it has none."""
    if len(text) > CACHE_MAX_CHARS or analysis.error is not None:
        return
    shaped = _shape_of(dialect, text)
    if shaped is None:
        return
    key, literals = shaped
    with _lock:
        shape = _shapes.get(key)
        if shape is None:
            # a one-off text never pays for learning: only a shape seen twice is learned
            _shapes[key] = _Shape(seen=1)
            _trim()
            return
        _shapes.move_to_end(key)
        shape.seen += 1
        if shape.failures >= FAILURES_PER_KEY or len(shape.templates) >= TEMPLATES_PER_KEY:
            return
    hit = None
    try:
        template = _build(dialect, text, literals, analysis)
        if template is not None:
            hit = Hit(template, literals)
            _add_render(template, fetch)
            got = hit.rewrite(fetch)
            if got is None or got.text != rewritten or got.link_text != link_text:
                hit = None
    except (SqlglotError, RecursionError, ValueError):
        hit = None
    with _lock:
        shape = _shapes.setdefault(key, _Shape())
        _shapes.move_to_end(key)
        if hit is None:
            shape.failures += 1
        elif all(t.pinned != hit.template.pinned for t in shape.templates):
            shape.templates.append(hit.template)
        _trim()


def _trim() -> None:
    while len(_shapes) > TEMPLATE_KEYS:
        _shapes.popitem(last=False)


def add_render(hit: Hit, fetch: int | None) -> Rewrite | None:
    """Render a known template for a new fetch (the row cap changed); None if it cannot."""
    try:
        _add_render(hit.template, fetch)
    except (SqlglotError, RecursionError, ValueError):
        hit.template.renders[fetch] = None
    return hit.rewrite(fetch)


def clear() -> None:
    with _lock:
        _shapes.clear()
        _hits.clear()


# -- internals -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)  # match() and learn() on one request see the same text
def _shape_of(dialect: str, text: str) -> tuple[tuple[Any, ...], tuple[Literal, ...]] | None:
    """(key, literals): the token stream with int and string literals replaced by their kind,
    and those literals. None: no template for this text."""
    try:
        tokens = _tokenizer(dialect).tokenize(text)
    except (SqlglotError, RecursionError):
        return None
    key: list[Any] = [dialect]
    literals: list[Literal] = []
    for tok in tokens:
        kind = None
        tt = tok.token_type
        if tt is TokenType.NUMBER and tok.text.isascii() and tok.text.isdigit():
            value = int(tok.text)
            kind = _INT4 if value <= _INT4_MAX else _INT8 if value <= _INT8_MAX else None
        elif tt is TokenType.STRING:
            kind = _STRING
        elif tt is TokenType.PARAMETER or tt is TokenType.PLACEHOLDER:
            return None  # the text has its own parameters: not ours to number
        if kind is None:
            key.append((tt, tok.text, tuple(tok.comments)) if tok.comments else (tt, tok.text))
        else:
            literals.append((kind, tok.text, text[tok.start : tok.end + 1], tok.start, tok.end + 1))
            key.append((kind, tuple(tok.comments)) if tok.comments else kind)
    return tuple(key), tuple(literals)


_local = threading.local()


def _tokenizer(dialect: str) -> Tokenizer:
    """One tokenizer per dialect and thread, reused (building one costs as much as using it;
    a tokenizer holds state while it runs, so threads do not share one)."""
    cache: dict[str, Tokenizer] | None = getattr(_local, "tokenizers", None)
    if cache is None:
        cache = _local.tokenizers = {}
    tok = cache.get(dialect)
    if tok is None:
        d = Dialect.get_or_raise(dialect)
        tok = cache[dialect] = d.tokenizer_class(dialect=d)
    return tok


def _sentinel(kind: str, i: int) -> str:
    if kind == _INT4:
        return str(1_987_650_000 + i)
    if kind == _INT8:
        return str(8_987_654_321_000_000_000 + i)
    return f"slc_sentinel_{i}_q"


def _build(
    dialect: str,
    text: str,
    literals: tuple[Literal, ...],
    analysis: SqlAnalysis,
) -> Template | None:
    """Which literals are inert (from a probe whose literals are all sentinels), then the
    analysis of the text with only those replaced; None unless it equals `analysis`."""
    if not literals:
        return None
    sentinels = [_sentinel(lit[0], i) for i, lit in enumerate(literals)]
    if any(s in text for s in sentinels):
        return None
    probe_all = _substitute(text, literals, [True] * len(literals), sentinels)
    tree = sqlglot.parse_one(probe_all, read=dialect)
    nodes: dict[str, list[exp.Literal]] = {}
    for node in tree.find_all(exp.Literal):
        nodes.setdefault(node.this, []).append(node)
    inert = []
    for s in sentinels:
        found = nodes.get(s, [])
        if len(found) != 1:
            return None
        inert.append(_is_inert(found[0]))
    if not any(inert):
        return None
    probe = _substitute(text, literals, inert, sentinels)
    probed = analyse_sql(dialect, probe)
    if not _same_verdict(probed, analysis):
        return None
    # no stage reads the syntax tree (the rewrite parses the probe through its own cache):
    # a template without it keeps the garbage collector's heap small
    p = probed.parsed
    bare = Parsed((), explain=p.explain, comments=p.comments, trailing_comment=p.trailing_comment)
    probed = dataclasses.replace(probed, parsed=bare)
    written = tuple(
        exp.Literal.string(s).sql(dialect=dialect) if lit[0] == _STRING else s
        for lit, s in zip(literals, sentinels, strict=True)
    )
    pinned = tuple(lit[2] for lit, i in zip(literals, inert, strict=True) if not i)
    return Template(dialect, probed, tuple(inert), pinned, probe, written)


def _substitute(
    text: str, literals: tuple[Literal, ...], which: list[bool], sentinels: list[str]
) -> str:
    """`text` with the chosen literals replaced by their sentinels."""
    out, at = [], 0
    for lit, chosen, sentinel in zip(literals, which, sentinels, strict=True):
        if chosen:
            value = f"'{sentinel}'" if lit[0] == _STRING else sentinel
            out += [text[at : lit[3]], value]
            at = lit[4]
    out.append(text[at:])
    return "".join(out)


def _is_inert(node: exp.Literal) -> bool:
    """A literal compared with a column: no stage reads its value."""
    parent = node.parent
    if isinstance(parent, _COMPARISONS):
        other = parent.expression if node.arg_key == "this" else parent.this
        return isinstance(other, exp.Column)
    if isinstance(parent, exp.In) and node.arg_key == "expressions":
        return isinstance(parent.this, exp.Column)
    if isinstance(parent, exp.Between) and node.arg_key in ("low", "high"):
        return isinstance(parent.this, exp.Column)
    return False


def _same_verdict(a: SqlAnalysis, b: SqlAnalysis) -> bool:
    """Everything a stage reads, except the parsed tree itself."""
    return all(
        getattr(a, name) == getattr(b, name)
        for name in (
            "error",
            "suggestion",
            "operation",
            "access",
            "main_tables",
            "columns",
            "unbounded",
            "structural",
            "injection_blocks",
            "injection_warnings",
            "returns_rows",
        )
    ) and (a.parsed.explain, a.parsed.comments, a.parsed.trailing_comment) == (
        b.parsed.explain,
        b.parsed.comments,
        b.parsed.trailing_comment,
    )


def _add_render(template: Template, fetch: int | None) -> None:
    """Split the probe's rewrite (capped at `fetch`, and uncapped) at the sentinels."""
    if fetch in template.renders:
        return
    pairs = zip(template.sentinels, template.inert, strict=True)
    inert_sentinels = {s: i for i, (s, inert) in enumerate(pairs) if inert}
    capped = _split(rewrite_sql(template.dialect, template.probe, fetch), inert_sentinels)
    link = _split(rewrite_sql(template.dialect, template.probe, None), inert_sentinels)
    if capped is None or link is None:
        template.renders[fetch] = None
        return
    template.renders[fetch] = _Render(capped[0], capped[1], link[0], link[1])


def _split(sql: str, sentinels: dict[str, int]) -> tuple[tuple[str, ...], tuple[int, ...]] | None:
    """Cut `sql` at each sentinel; None unless each appears exactly once."""
    found = []
    for s, i in sentinels.items():
        at = sql.find(s)
        if at < 0 or sql.find(s, at + 1) >= 0:
            return None
        found.append((at, s, i))
    found.sort()
    pieces, slots, prev = [], [], 0
    for at, s, i in found:
        pieces.append(sql[prev:at])
        slots.append(i)
        prev = at + len(s)
    pieces.append(sql[prev:])
    return tuple(pieces), tuple(slots)


def _plain(literal: Literal) -> bool:
    """A string literal whose value is its source between the quotes, `''` read as `'`, with
    no backslash (whose meaning depends on standard_conforming_strings) and no prefix
    (E'', U&''): bound as a parameter it means exactly what it meant inline."""
    source = literal[2]
    return (
        len(source) >= 2
        and source[0] == source[-1] == "'"
        and "\\" not in source
        and source[1:-1].replace("''", "'") == literal[1]
    )


def _inline(dialect: str, literal: Literal) -> str:
    if literal[0] != _STRING:
        return literal[1]
    if len(literal[1]) <= 256:
        return _string_sql(dialect, literal[1])
    return exp.Literal.string(literal[1]).sql(dialect=dialect)


@functools.lru_cache(maxsize=1024)
def _string_sql(dialect: str, value: str) -> str:
    """A string literal as the dialect's generator writes it (quoting and escapes)."""
    return exp.Literal.string(value).sql(dialect=dialect)


def _join(pieces: tuple[str, ...], slots: tuple[int, ...], values: list[str]) -> str:
    out = [pieces[0]]
    for piece, i in zip(pieces[1:], slots, strict=True):
        out += [values[i], piece]
    return "".join(out)

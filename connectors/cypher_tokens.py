"""A Cypher tokenizer: the one place that knows how Cypher text splits into tokens, which
word is a clause keyword, and where each bracket closes.

No Python Cypher parser is well kept, so the analysis (safety/languages/cypher_analysis.py)
and the rewrites work on this token stream: strings, comments and backtick-quoted names are
single tokens, so a keyword inside them is never mistaken for a clause, and every position
maps back to the text for rewrites.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    WORD = "word"  # keyword or identifier (case kept; compare with .upper)
    NAME = "name"  # `backtick quoted` identifier (never a keyword)
    STRING = "string"
    NUMBER = "number"
    PARAM = "param"  # $name or $0
    PUNCT = "punct"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind is Kind.WORD else ""

    @property
    def ident(self) -> str | None:
        """The identifier this token names (backticks removed), or None."""
        if self.kind is Kind.WORD:
            return self.text
        if self.kind is Kind.NAME:
            return self.text[1:-1].replace("``", "`")
        return None


class CypherSyntaxError(ValueError):
    """Raised when the text cannot be tokenized (an unterminated string, comment or name)."""


_PUNCT = ("<-", "->", "<=", ">=", "<>", "=~", "+=", "..", "::")
_SINGLE = set("()[]{}:,.|*+-/%=<>;^!&?")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W\d]\w*")
_NUMBER = re.compile(r"(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_PARAM = re.compile(r"\$(?:[^\W\d]\w*|\d+|`(?:[^`]|``)*`)")


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens; comments and whitespace are dropped."""
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        m = _SPACE.match(text, i)
        if m:
            i = m.end()
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise CypherSyntaxError(f"unterminated comment at offset {i}")
            i = j + 2
            continue
        if c in "'\"":
            j = _string_end(text, i)
            out.append(Token(Kind.STRING, text[i:j], i, j))
            i = j
            continue
        if c == "`":
            j = i + 1
            while True:
                j = text.find("`", j)
                if j < 0:
                    raise CypherSyntaxError(f"unterminated `name` at offset {i}")
                if text.startswith("``", j):
                    j += 2
                    continue
                break
            out.append(Token(Kind.NAME, text[i : j + 1], i, j + 1))
            i = j + 1
            continue
        if c == "$":
            m = _PARAM.match(text, i)
            if not m:
                raise CypherSyntaxError(f"a `$` without a parameter name at offset {i}")
            out.append(Token(Kind.PARAM, m.group(), i, m.end()))
            i = m.end()
            continue
        m = (
            _NUMBER.match(text, i)
            if (c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()))
            else None
        )
        if m and not (out and out[-1].kind is Kind.PUNCT and out[-1].text == "." and c == "."):
            out.append(Token(Kind.NUMBER, m.group(), i, m.end()))
            i = m.end()
            continue
        m = _WORD.match(text, i)
        if m:
            out.append(Token(Kind.WORD, m.group(), i, m.end()))
            i = m.end()
            continue
        two = text[i : i + 2]
        if two in _PUNCT:
            out.append(Token(Kind.PUNCT, two, i, i + 2))
            i += 2
            continue
        if c in _SINGLE:
            out.append(Token(Kind.PUNCT, c, i, i + 1))
            i += 1
            continue
        raise CypherSyntaxError(f"unexpected character {c!r} at offset {i}")
    return out


def _string_end(text: str, i: int) -> int:
    quote, j, n = text[i], i + 1, len(text)
    while j < n:
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == quote:
            return j + 1
        j += 1
    raise CypherSyntaxError(f"unterminated string at offset {i}")


LINK_PARAM = "sluice_link"  # the list parameter a linked step's batch is bound to
CLAUSES = frozenset(
    {
        "MATCH", "OPTIONAL", "WITH", "RETURN", "UNWIND", "WHERE", "ORDER", "SKIP", "LIMIT",
        "CREATE", "MERGE", "SET", "REMOVE", "DELETE", "DETACH", "CALL", "YIELD", "UNION",
        "FOREACH", "ON", "USE", "LOAD", "DROP", "SHOW", "GRANT", "REVOKE", "DENY", "ALTER",
        "START", "STOP", "TERMINATE", "COPY", "ATTACH", "INSTALL", "EXPORT", "IMPORT",
        "EXPLAIN", "PROFILE", "FINISH", "OFFSET",
    }
)  # fmt: skip
AGGREGATES = frozenset(
    {"count", "sum", "avg", "min", "max", "collect", "stdev", "stdevp", "percentilecont",
     "percentiledisc"}
)  # fmt: skip


class Malformed(ValueError):
    """Raised when brackets do not balance."""


def match_brackets(tokens: list[Token]) -> list[int]:
    """For each opening bracket the index of its closer (and the reverse); -1 elsewhere."""
    pair = [-1] * len(tokens)
    stack: list[int] = []
    closers = {")": "(", "]": "[", "}": "{"}
    for i, t in enumerate(tokens):
        if t.kind is not Kind.PUNCT:
            continue
        if t.text in "([{":
            stack.append(i)
        elif t.text in closers:
            if not stack or tokens[stack[-1]].text != closers[t.text]:
                raise Malformed(f"unbalanced {t.text!r} at offset {t.start}")
            j = stack.pop()
            pair[i], pair[j] = j, i
    if stack:
        raise Malformed(f"unclosed {tokens[stack[-1]].text!r} at offset {tokens[stack[-1]].start}")
    return pair


def keyword(tokens: list[Token], i: int) -> str:
    """The clause keyword at i, or "" when the word there is a name (property, label, key)."""
    t = tokens[i]
    if t.kind is not Kind.WORD:
        return ""
    up = t.upper
    if up not in CLAUSES:
        return ""
    if i > 0:
        prev = tokens[i - 1]
        if prev.kind is Kind.PUNCT and prev.text in (".", ":", "$"):
            return ""
        if prev.kind is Kind.WORD and prev.upper == "AS":
            return ""
    if i + 1 < len(tokens) and tokens[i + 1].kind is Kind.PUNCT and tokens[i + 1].text == ":":
        return ""  # a map key {set: 1}
    return up


def statement(text: str) -> tuple[str, list[Token]]:
    """The text without a trailing `;`, and its tokens."""
    tokens = tokenize(text)
    if tokens and tokens[-1].text == ";":
        text = text[: tokens[-1].start]
        tokens = tokens[:-1]
    return text.rstrip(), tokens


def top_level(tokens: list[Token]) -> list[int]:
    """Indexes of the tokens at bracket depth 0."""
    out, depth = [], 0
    for i, t in enumerate(tokens):
        if t.kind is Kind.PUNCT and t.text in "([{":
            depth += 1
        elif t.kind is Kind.PUNCT and t.text in ")]}":
            depth -= 1
        elif depth == 0:
            out.append(i)
    return out


def union_branches(tokens: list[Token]) -> list[tuple[int, int]]:
    """[lo, hi) token ranges of the UNION branches."""
    out, lo = [], 0
    for i in top_level(tokens):
        if keyword(tokens, i) == "UNION":
            out.append((lo, i))
            lo = i + 1
            if lo < len(tokens) and tokens[lo].upper == "ALL":
                lo += 1
    out.append((lo, len(tokens)))
    return out

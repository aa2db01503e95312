"""A Cypher tokenizer: the one place that knows how Cypher text splits into tokens.

No Python Cypher parser is well kept, so the analysis (safety/cypher_analysis.py) works on this
token stream: strings, comments and backtick-quoted names are single tokens, so a keyword inside
them is never mistaken for a clause, and every position maps back to the text for rewrites.
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

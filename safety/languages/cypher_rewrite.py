"""GUARDRAILS' row cap on Cypher text, edited at token positions so everything else the
client wrote runs unchanged (the link filter is connectors/cypher_link.py)."""

from __future__ import annotations

from connectors.cypher_tokens import (
    Kind,
    keyword,
    statement,
    top_level,
    union_branches,
)


class RewriteRefused(ValueError):
    """Raised when a body cannot be capped safely; the message says why."""


def cap(text: str, fetch: int) -> str:
    """Every branch's final RETURN returns at most `fetch` rows: a LIMIT the client wrote is
    kept when smaller, lowered when larger, and added when missing."""
    text, tokens = statement(text)
    top = set(top_level(tokens))
    edits: list[tuple[int, int, str]] = []
    for lo, hi in union_branches(tokens):
        returns = [i for i in range(lo, hi) if i in top and keyword(tokens, i) == "RETURN"]
        if not returns:
            continue
        limits = [i for i in range(returns[-1], hi) if i in top and keyword(tokens, i) == "LIMIT"]
        if limits:
            value = tokens[limits[-1] + 1] if limits[-1] + 1 < hi else None
            if value is None or value.kind is not Kind.NUMBER or not value.text.isdigit():
                raise RewriteRefused(
                    "the final LIMIT must be a literal number so sluice can cap it"
                )
            if int(value.text) > fetch:
                edits.append((value.start, value.end, str(fetch)))
        else:
            end = tokens[hi - 1].end
            edits.append((end, end, f" LIMIT {fetch}"))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text

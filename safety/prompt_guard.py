"""PROMPT_GUARD: what can be judged before parsing. The language the database speaks, body
and query size, control characters, and natural-language destructive intent in the query
field ("delete all rows", "drop the database"); a real statement such as
`DELETE FROM t WHERE id = 1` is not natural language and is left to the later stages.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from connectors import registry as connectors
from safety.languages import registry as languages
from safety.verdicts import INVALID_REQUEST, Allow, Block, Verdict

if TYPE_CHECKING:
    from safety.context import StepContext
    from safety.types import StageName

# NUL and the other C0 controls except tab, newline and carriage return; bidi overrides
# (they make the text read differently from what runs: "Trojan Source").
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\u202a-\u202e\u2066-\u2069]")
_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_VERB = r"(?:delete|remove|erase|wipe|purge|destroy|nuke|drop|truncate|clear|empty|kill)"
_THING = (
    r"(?:database|databases|db|table|tables|collection|collections|schema|data|rows|"
    r"records|documents|users|everything|it\s+all)"
)
_INTENT = re.compile(
    rf"\b{_VERB}\s+(?:out\s+)?(?:all|every|everything)\b"
    rf"|\b{_VERB}\s+(?:out\s+)?(?:the|this|that|my|our|your|whole|entire|all\s+the)\s+"
    rf"(?:\w+\s+){{0,2}}?{_THING}\b"
    rf"|\b(?:wipe|nuke|purge|erase)\s+(?:\w+\s+){{0,2}}?{_THING}\b"
    rf"|\bget\s+rid\s+of\s+(?:all|every|the)\b",
    re.IGNORECASE,
)


class PromptGuard:
    name: StageName = "PROMPT_GUARD"

    def check(self, step: StepContext) -> Verdict:
        s, config = step.step, step.config
        if step.db_type is None:
            return Block(
                f"database {s.database!r} is not configured",
                "use a database named under `databases` in sluice.yaml",
                "builtin",
            )
        if step.lang is None:
            return Block(
                f"database {s.database!r} has type {step.db_type!r}, which sluice has no "
                "language for",
                f"use one of the types {', '.join(connectors.names())}",
                "builtin",
            )
        spoken = step.language.name
        problem = languages.mismatch(s.language, spoken, s.database, step.db_type)
        if problem is not None:  # a malformed request (400), on every path, checked here only
            return Block(*problem, "builtin", invalid=INVALID_REQUEST)
        limit = config.server.body_limit_bytes
        if step.request.body_bytes > limit:
            return Block(
                f"request body of {step.request.body_bytes} bytes exceeds "
                f"server.body_limit_bytes={limit}",
                "send a smaller request",
                f"server.body_limit_bytes={limit}",
            )
        max_chars = config.safety.max_query_chars
        if len(s.query) > max_chars:
            return Block(
                f"{step.label} is {len(s.query)} characters, over "
                f"safety.max_query_chars={max_chars}",
                "send a shorter query",
                f"safety.max_query_chars={max_chars}",
            )
        if not s.query.strip():
            return Block(f"{step.label} is empty", "send a query", "builtin")
        m = _CONTROL.search(s.query)
        if m is not None:
            return Block(
                f"{step.label} contains control character U+{ord(m.group()):04X} at "
                f"offset {m.start()}",
                "remove control characters from the query",
                "builtin",
            )
        text = step.language.prompt_text(s.query)
        m = _INTENT.search(_LITERAL.sub("''", text))
        if m is not None:
            return Block(
                f"{step.label} reads as a natural-language request to destroy data "
                f"({m.group().strip()!r}), not as {spoken.upper()}",
                f"send a {spoken.upper()} statement; destructive statements "
                "need a write or admin grant",
                "builtin",
            )
        return Allow(f"safety.max_query_chars={max_chars}")

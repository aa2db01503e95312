"""What a Cypher body reads and writes, found on its token stream (safety/cypher_tokens.py).

Labels and relationship types are the "tables" of the permission model. The analysis finds:
- every label and relationship type a pattern names, in MATCH/OPTIONAL MATCH (read), CREATE
  (write) and MERGE (read and write) clauses, and in patterns inside expressions (pattern
  predicates, pattern comprehensions, EXISTS/COUNT/COLLECT subqueries: reads);
- the targets of SET, REMOVE and DELETE through the labels their variables were bound with in
  an earlier clause (`MATCH (p:Post) DETACH DELETE p` writes Post); scopes follow WITH
  projections, UNION branches and CALL subqueries, so a name re-bound without a label is not
  mistaken for the labeled one;
- `*` (every label, or every relationship type) for an unlabeled node pattern that binds a new
  variable, an untyped relationship, a label negation or wildcard, a variable whose labels are
  unknown, and the read-only procedures of the allow-list;
- the properties read per label (`p.name`, inline maps) and whole nodes returned, for
  `deny_columns`;
- what is always refused: more than one statement, LOAD CSV and file/URL loaders, procedures
  off the allow-list (apoc.* among them: dynamic Cypher, periodic jobs, exports), `USE`,
  `CALL ... IN TRANSACTIONS`, EXPLAIN/PROFILE prefixes, and the import/export/extension
  statements of embedded graph files.

The analysis over-approximates where it cannot tell (more grants needed, never fewer); reads
also run in the server's read-only mode, so a gap here still cannot write.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from connectors.cypher_tokens import (
    CLAUSES,
    LINK_PARAM,
    CypherSyntaxError,
    Kind,
    Malformed,
    Token,
    keyword,
    match_brackets,
    tokenize,
)
from safety.languages.cypher_rewrite import RewriteRefused, cap
from safety.types import Finding, Operation

ALL = "*"  # every label / relationship type: needs a database-level grant

# Read-only procedures an analysis may call (metadata of the whole graph: they read `*`).
READ_PROCEDURES = frozenset(
    {"db.labels", "db.relationshiptypes", "db.propertykeys", "db.indexes", "db.constraints"}
)
_WRITES: dict[str, Operation] = {
    "CREATE": "INSERT",
    "MERGE": "INSERT",
    "SET": "UPDATE",
    "REMOVE": "UPDATE",
    "DELETE": "DELETE",
}
_ADMIN_VERBS = frozenset({"DROP", "SHOW", "GRANT", "REVOKE", "DENY", "ALTER", "START", "STOP"})
_ADMIN_VERBS |= {"TERMINATE"}
_REFUSED_VERBS = {
    "COPY": "COPY reads or writes files on the server",
    "ATTACH": "ATTACH opens another database",
    "INSTALL": "INSTALL adds an extension",
    "EXPORT": "EXPORT DATABASE writes files on the server",
    "IMPORT": "IMPORT DATABASE reads files on the server",
    "USE": "USE switches to another graph than the step's database",
    "EXPLAIN": "EXPLAIN/PROFILE prefixes are not run through sluice",
    "PROFILE": "EXPLAIN/PROFILE prefixes are not run through sluice",
}
# Functions whose argument is not returned whole (a bare variable inside them is no leak).
_SCALAR_OF_ENTITY = frozenset(
    {"count", "id", "elementid", "labels", "type", "exists", "label", "typeof", "hasLabels"}
)

# the operation a statement reports: its widest class
_ORDER: tuple[Operation, ...] = ("INSERT", "UPDATE", "DELETE", "DDL")


@dataclass(frozen=True, slots=True)
class PropertyUse:
    label: str  # a label, relationship type, or ALL
    name: str  # lower-cased; "*" for the whole node or relationship
    use: str


@dataclass(frozen=True, slots=True)
class CypherAnalysis:
    error: str | None = None
    suggestion: str | None = None
    operation: Operation = "SELECT"
    access: tuple[tuple[str, Operation], ...] = ()  # (label/type or ALL, operation)
    properties: tuple[PropertyUse, ...] = ()
    structural: tuple[Finding, ...] = ()  # always refused (AST_CHECKER)
    injection_blocks: tuple[Finding, ...] = ()  # Cypher has no injection findings of its own:
    injection_warnings: tuple[str, ...] = ()  # a literal is data, and one statement runs
    unbounded: bool = False  # SET/REMOVE/DELETE over every matched entity (no filter)
    returns_rows: bool = False  # a read with a RETURN (GUARDRAILS caps it)
    params: tuple[str, ...] = ()


@dataclass
class _Scope:
    labels: dict[str, frozenset[str]] = field(default_factory=dict)  # var -> labels (or {ALL})
    rels: set[str] = field(default_factory=set)  # variables bound to relationships/paths


def analyse(text: str) -> CypherAnalysis:
    """Analyse one Cypher body; never raises (a body it cannot read is an error verdict)."""
    try:
        tokens = tokenize(text)
    except CypherSyntaxError as exc:
        return CypherAnalysis(error=f"cannot read the Cypher body: {exc}", suggestion=_FIX)
    if tokens and tokens[-1].text == ";":
        tokens = tokens[:-1]
    if not tokens:
        return CypherAnalysis(error="the Cypher body is empty", suggestion="send a query")
    if any(t.kind is Kind.PUNCT and t.text == ";" for t in tokens):
        return CypherAnalysis(
            error="the body holds more than one statement (`;`)",
            suggestion="send one statement per step",
        )
    try:
        result = _Analyser(tokens).run()
    except Malformed as exc:
        return CypherAnalysis(error=str(exc), suggestion=_FIX)
    except RecursionError:
        return CypherAnalysis(error="the Cypher body is nested too deeply", suggestion=_FIX)
    if result.returns_rows:
        try:
            cap(text, 1)
        except RewriteRefused as exc:  # GUARDRAILS could not cap it: refused up front
            extra = (str(exc), "write LIMIT 100, not a parameter or an expression")
            return dataclasses.replace(result, structural=(*result.structural, extra))
    return result


_FIX = (
    "fix the Cypher: one statement of MATCH/OPTIONAL MATCH/WITH/UNWIND/RETURN (reads) or "
    "CREATE/MERGE/SET/REMOVE/DELETE (writes)"
)


class _Analyser:
    def __init__(self, tokens: list[Token]) -> None:
        self.t = tokens
        self.pair = match_brackets(tokens)
        self.access: dict[tuple[str, Operation], None] = {}
        self.props: dict[PropertyUse, None] = {}
        self.refused: list[Finding] = []
        self.ops: set[Operation] = set()
        self.filtered = False  # a WHERE, an inline property map or a LIMIT bounds the writes
        self.has_return = False
        self.params: dict[str, None] = {}
        self._collect: set[str] | None = None  # labels of the path being bound, if any

    # -- driver ---------------------------------------------------------------------------

    def run(self) -> CypherAnalysis:
        self._refusals()
        self._admin()
        if "DDL" in self.ops:
            return CypherAnalysis(
                operation="DDL", access=((ALL, "DDL"),), structural=tuple(self.refused)
            )
        self._block(0, len(self.t), _Scope())
        # Fail closed: a write keyword whose target the walk above did not resolve writes `*`.
        for i in range(len(self.t)):
            kw = keyword(self.t, i)
            wrote = _WRITES.get(kw)
            if wrote is not None and not any(o == wrote for _, o in self.access):
                self.ops.add(wrote)
                self._use(ALL, wrote)
        op: Operation = "SELECT"
        for candidate in _ORDER:
            if candidate in self.ops:
                op = candidate
        writes = self.ops & {"UPDATE", "DELETE"}
        return CypherAnalysis(
            operation=op,
            access=tuple(self.access),
            properties=tuple(self.props),
            structural=tuple(self.refused),
            unbounded=bool(writes) and not self.filtered,
            returns_rows=op == "SELECT" and self.has_return,
            params=tuple(self.params),
        )

    def _refusals(self) -> None:
        t = self.t
        for i, tok in enumerate(t):
            if tok.kind is Kind.PARAM:
                self.params[tok.text[1:].strip("`")] = None
            kw = keyword(t, i)
            if kw == "LOAD":
                self.refused.append(
                    ("LOAD CSV reads files or URLs from the server", "query the graph's data")
                )
            elif kw in _REFUSED_VERBS:
                self.refused.append((_REFUSED_VERBS[kw], "run the statement without it"))
            elif kw == "CALL":
                nxt = t[i + 1] if i + 1 < len(t) else None
                if nxt is not None and nxt.kind is Kind.PUNCT and nxt.text == "{":
                    close = self.pair[i + 1]
                    if close + 2 < len(t) and t[close + 1].upper == "IN":
                        self.refused.append(
                            (
                                "CALL { ... } IN TRANSACTIONS schedules batched work",
                                "run the subquery as one statement",
                            )
                        )
                    continue
                name, _ = self._dotted(i + 1)
                if not name:
                    raise Malformed(f"CALL without a procedure name at offset {tok.start}")
                if name.lower() not in READ_PROCEDURES:
                    self.refused.append(
                        (
                            f"procedure {name} is not on sluice's allow-list of read-only "
                            "procedures (dynamic Cypher, file or URL loaders and scheduled "
                            "jobs are refused)",
                            f"use one of {', '.join(sorted(READ_PROCEDURES))}, or MATCH",
                        )
                    )
                else:
                    self._use(ALL, "SELECT")
                    self.has_return = True
        if self.params.get(LINK_PARAM, 1) is None:
            self.refused.append(
                (f"the parameter ${LINK_PARAM} is reserved for sluice's link filter", "rename it")
            )

    def _admin(self) -> None:
        t = self.t
        for i in range(len(t)):
            kw = keyword(t, i)
            nxt = t[i + 1].upper if i + 1 < len(t) else ""
            # CREATE makes data only with a pattern: `CREATE (`, or a path `CREATE p = (`
            schema = (
                kw == "CREATE"
                and t[i - 1].upper != "ON"
                and not (
                    t[i + 1 : i + 2]
                    and t[i + 1].text == "("
                    or t[i + 2 : i + 3]
                    and t[i + 2].text == "="
                )
            )
            if schema or kw in _ADMIN_VERBS:
                self.ops.add("DDL")
                self._use(ALL, "DDL")
            elif kw == "DETACH" and nxt != "DELETE":
                self.refused.append(("DETACH DATABASE changes attached databases", "remove it"))

    def _dotted(self, i: int) -> tuple[str, int]:
        """A dotted name starting at i (`apoc.cypher.run`), and the index after it."""
        t, parts = self.t, []
        while i < len(t) and t[i].ident is not None:
            parts.append(t[i].ident or "")
            if i + 1 < len(t) and t[i + 1].text == ".":
                i += 2
                continue
            i += 1
            break
        return ".".join(parts), i

    # -- clauses --------------------------------------------------------------------------

    def _block(self, lo: int, hi: int, scope: _Scope) -> None:
        """Analyse tokens[lo:hi] as a sequence of clauses (a query or a subquery)."""
        t = self.t
        clause, start = "", lo
        i = lo
        while i < hi:
            kw = keyword(t, i)
            if kw and kw not in ("ON", "OPTIONAL") or (kw == "OPTIONAL" and clause != "OPTIONAL"):
                if kw in ("ORDER", "SKIP", "LIMIT", "WHERE", "OFFSET") and clause in (
                    "WITH",
                    "RETURN",
                    "MATCH",
                ):
                    if kw == "WHERE" or kw == "LIMIT":
                        self.filtered = True
                    i += 1
                    continue
                if kw == "MATCH" and clause == "OPTIONAL":
                    clause = "MATCH"
                    i += 1
                    continue
                self._clause(clause, start, i, scope)
                clause, start = kw, i
                if kw == "UNION":
                    scope.labels.clear()
                    scope.rels.clear()
            if t[i].kind is Kind.PUNCT and t[i].text in "([{":
                i = self.pair[i] + 1
                continue
            i += 1
        self._clause(clause, start, hi, scope)

    def _clause(self, clause: str, lo: int, hi: int, scope: _Scope) -> None:
        if lo >= hi or not clause:
            if lo < hi:
                self._expressions(lo, hi, scope, "selected")
            return
        t = self.t
        body = lo + 1
        if clause == "DETACH":
            body += 1  # DETACH DELETE
        if clause in ("MATCH", "OPTIONAL"):
            self._patterns(body, hi, scope, "SELECT")
        elif clause == "CREATE":
            self.ops.add("INSERT")
            self._patterns(body, hi, scope, "INSERT")
        elif clause == "MERGE":
            self.ops.add("INSERT")
            self._patterns(body, hi, scope, "MERGE")
        elif clause in ("SET", "REMOVE"):
            self.ops.add("UPDATE")
            self._set_items(body, hi, scope)
        elif clause in ("DELETE", "DETACH"):
            self.ops.add("DELETE")
            self._deletes(body, hi, scope)
        elif clause in ("WITH", "RETURN"):
            if clause == "RETURN":
                self.has_return = True
            end = self._clause_end(body, hi)
            for a, b in self._split(body, end):
                if clause == "WITH" and self._bare_item(a, b, scope):
                    continue  # passing a variable on is not reading its properties
                self._expressions(a, b, scope, "selected")
            self._expressions(end, hi, scope, "filtered on")
            self._project(body, hi, scope, clause)
        elif clause == "FOREACH":
            self._foreach(body, hi, scope)
        elif clause == "UNWIND":
            self._expressions(body, hi, scope, "selected")
            alias = self._alias(body, hi)
            if alias:
                scope.labels.pop(alias, None)
        elif clause in ("CALL", "YIELD"):
            if body < hi and t[body].text == "{":
                self._subquery(body, scope, imports=True)
            else:
                self._expressions(body, hi, scope, "selected")
        else:
            self._expressions(body, hi, scope, "selected")

    # -- patterns -------------------------------------------------------------------------

    def _patterns(self, lo: int, hi: int, scope: _Scope, mode: str) -> None:
        """Pattern parts of a MATCH/CREATE/MERGE clause; WHERE and ON ... SET handled too."""
        t = self.t
        i = lo
        while i < hi:
            kw = keyword(t, i)
            if kw == "WHERE":
                self.filtered = True
                self._expressions(i + 1, self._clause_end(i + 1, hi), scope, "filtered on")
                i = self._clause_end(i + 1, hi)
                continue
            if kw == "ON":  # MERGE ... ON CREATE SET / ON MATCH SET
                end = self._clause_end(i + 3, hi)
                self.ops.add("UPDATE")
                self._set_items(i + 3, end, scope)
                i = end
                continue
            tok = t[i]
            if (
                tok.ident is not None
                and i + 2 < hi
                and t[i + 1].text == "="
                and t[i + 2].text in ("(",)
                or (i + 2 < hi and t[i + 1].text == "=" and t[i + 2].kind is Kind.WORD)
            ) and tok.ident is not None:
                # p = (a)-[r]->(b) or p = shortestPath(...): p holds every entity of the path
                end = self._chain_end(i + 2) if t[i + 2].text == "(" else self.pair[i + 3] + 1
                outer, self._collect = self._collect, set()
                self._patterns(i + 2, end, scope, mode)
                scope.labels[tok.ident] = frozenset(self._collect)
                scope.rels.add(tok.ident)
                self._collect = outer | self._collect if outer is not None else None
                i = end
                continue
            if tok.kind is Kind.PUNCT and tok.text == "(":
                if i > lo and t[i - 1].kind is Kind.WORD and keyword(t, i - 1) == "":
                    # shortestPath(...), allShortestPaths(...): a pattern inside a call
                    self._patterns(i + 1, self.pair[i], scope, mode)
                else:
                    self._node(i, scope, mode)
                i = self.pair[i] + 1
                continue
            if tok.kind is Kind.PUNCT and tok.text == "[":
                self._relationship(i, scope, mode)
                i = self.pair[i] + 1
                continue
            if tok.kind is Kind.PUNCT and tok.text in ("-", "->", "<-", ">"):
                self._bare_connector(i, scope, mode)
            elif tok.kind is Kind.PUNCT and tok.text == "{":
                self._expressions(i + 1, self.pair[i], scope, "filtered on")
                i = self.pair[i] + 1
                continue
            i += 1

    def _bare_connector(self, i: int, scope: _Scope, mode: str) -> None:
        """`-->`, `--`, `<--` with no brackets: an unnamed relationship of any type."""
        t = self.t
        if t[i].text not in ("-", "<-"):
            return
        nxt = t[i + 1] if i + 1 < len(t) else None
        if nxt is not None and nxt.kind is Kind.PUNCT and nxt.text in ("-", "->"):
            self._use(ALL, _op(mode))

    def _node(self, i: int, scope: _Scope, mode: str) -> None:
        """A node pattern `(var:Label:Other {k: v} WHERE ...)` at tokens[i] == "("."""
        end = self.pair[i]
        var, labels, j = self._var_and_labels(i + 1, end)
        known = scope.labels.get(var) if var else None
        if labels:
            if var:
                scope.labels[var] = frozenset(labels) | (known or frozenset())
            targets = labels
        elif known is not None and mode != "INSERT":
            targets = set(known)  # a reference to a variable bound earlier
        elif known is not None:
            targets = set()  # CREATE (a)-[:R]->(b): a and b exist, only R is written
        else:
            targets = {ALL}  # a new node of any label
            if var:
                scope.labels[var] = frozenset({ALL})
        for label in targets:
            self._use(label, _op(mode))
            if mode == "MERGE":
                self._use(label, "SELECT")
        self._pattern_tail(j, end, scope, targets)

    def _relationship(self, i: int, scope: _Scope, mode: str) -> None:
        end = self.pair[i]
        var, types, j = self._var_and_labels(i + 1, end)
        if var:
            scope.rels.add(var)
        known = scope.labels.get(var) if var else None
        if types:
            if var:
                scope.labels[var] = frozenset(types)
            targets = types
        elif known is not None:
            targets = set(known)
        else:
            targets = {ALL}
            if var:
                scope.labels[var] = frozenset({ALL})
        for rel_type in targets:
            self._use(rel_type, _op(mode))
            if mode == "MERGE":
                self._use(rel_type, "SELECT")
        # a variable-length spec: *, *2, *1..3, *..5
        while j < end and (self.t[j].kind is Kind.NUMBER or self.t[j].text in ("*", "..")):
            j += 1
        self._pattern_tail(j, end, scope, targets)

    def _var_and_labels(self, j: int, end: int) -> tuple[str, set[str], int]:
        t = self.t
        var = ""
        if j < end and t[j].ident is not None and t[j].kind in (Kind.WORD, Kind.NAME):
            if not (t[j].kind is Kind.WORD and t[j].upper == "WHERE"):
                var = t[j].ident or ""
                j += 1
        labels: set[str] = set()
        if j < end and t[j].text in (":", "::"):
            j += 1
            while j < end:
                tok = t[j]
                if tok.kind is Kind.PUNCT and tok.text in ("!", "%"):
                    labels.add(ALL)  # negation or wildcard: any other label
                    j += 1
                    continue
                if tok.kind is Kind.PUNCT and tok.text in ("(", ")") and tok.text == "(":
                    labels.add(ALL)  # grouped label expressions: not followed precisely
                    j = self.pair[j] + 1
                    continue
                if tok.ident is not None and tok.kind in (Kind.WORD, Kind.NAME):
                    if tok.kind is Kind.WORD and tok.upper == "WHERE":
                        break
                    labels.add(tok.ident)
                    j += 1
                    if j < end and t[j].text in (":", "|", "&", "|:"):
                        j += 1
                        continue
                    break
                break
        return var, labels, j

    def _pattern_tail(self, j: int, end: int, scope: _Scope, targets: set[str]) -> None:
        """Inline property map, `$param` or WHERE inside a node/relationship pattern."""
        t = self.t
        while j < end:
            tok = t[j]
            if tok.kind is Kind.PUNCT and tok.text == "{":
                self.filtered = True
                close = self.pair[j]
                for k in range(j + 1, close):
                    if (
                        t[k + 1].text == ":"
                        and t[k].ident is not None
                        and self._depth_in(j, k) == 0
                        and t[k - 1].text in ("{", ",")
                    ):
                        for label in targets:
                            self._prop(label, t[k].ident or "", "filtered on")
                self._expressions(j + 1, close, scope, "filtered on", map_keys=True)
                j = close + 1
                continue
            if tok.kind is Kind.PARAM:
                self.filtered = True
                for label in targets:
                    self._prop(label, "*", "filtered on")
                j += 1
                continue
            if tok.kind is Kind.WORD and tok.upper == "WHERE":
                self.filtered = True
                self._expressions(j + 1, end, scope, "filtered on")
                return
            raise Malformed(f"unexpected {tok.text!r} in a pattern at offset {tok.start}")

    def _depth_in(self, open_idx: int, k: int) -> int:
        depth = 0
        for m in range(open_idx + 1, k):
            tx = self.t[m]
            if tx.kind is Kind.PUNCT and tx.text in "([{":
                depth += 1
            elif tx.kind is Kind.PUNCT and tx.text in ")]}":
                depth -= 1
        return depth

    # -- expressions ----------------------------------------------------------------------

    def _expressions(
        self, lo: int, hi: int, scope: _Scope, use: str, *, map_keys: bool = False
    ) -> None:
        """Property reads, whole-entity reads and patterns inside expressions."""
        t = self.t
        i = lo
        while i < hi:
            tok = t[i]
            if tok.kind is Kind.PUNCT and tok.text == "(":
                close = self.pair[i]
                if self._is_pattern_paren(i):
                    self._pattern_chain(i, scope)
                    i = self._chain_end(i)
                    continue
                fn = t[i - 1].text.lower() if i > lo and t[i - 1].kind is Kind.WORD else ""
                if fn in _SCALAR_OF_ENTITY:
                    self._expressions_no_whole(i + 1, close, scope, use)
                    i = close + 1
                    continue
                self._expressions(i + 1, close, scope, use)
                i = close + 1
                continue
            if tok.kind is Kind.PUNCT and tok.text == "{":
                close = self.pair[i]
                prev = t[i - 1] if i > lo else None
                first = t[i + 1] if i + 1 < close else None
                if (
                    prev is not None
                    and prev.kind is Kind.WORD
                    and prev.upper
                    in (
                        "EXISTS",
                        "COUNT",
                        "COLLECT",
                    )
                ):
                    self._subquery(i, scope, imports=False)
                elif (
                    prev is not None
                    and prev.ident is not None
                    and prev.ident in scope.labels
                    and first is not None
                    and first.text in (".", "*")
                ):
                    # map projection n{.a, .b} / n{.*}
                    self._map_projection(prev.ident, i, close, scope, use)
                else:
                    self._expressions(i + 1, close, scope, use, map_keys=True)
                i = close + 1
                continue
            if tok.kind is Kind.PUNCT and tok.text == "[":
                self._expressions(i + 1, self.pair[i], scope, use)
                i = self.pair[i] + 1
                continue
            name = tok.ident
            if name is not None and name in scope.labels:
                nxt = t[i + 1] if i + 1 < hi else None
                prev = t[i - 1] if i > 0 else None
                if prev is not None and prev.text == ".":
                    i += 1
                    continue
                if map_keys and nxt is not None and nxt.text == ":":
                    i += 1
                    continue
                if nxt is not None and nxt.text == "." and i + 2 < hi and t[i + 2].ident:
                    for label in scope.labels[name]:
                        self._prop(label, t[i + 2].ident or "", use)
                    i += 3
                    continue
                if nxt is not None and nxt.text == "{":
                    i += 1
                    continue
                if nxt is not None and nxt.text in (":",):
                    i += 1  # label predicate n:Label
                    continue
                for label in scope.labels[name]:
                    self._prop(label, "*", use)
            i += 1

    def _expressions_no_whole(self, lo: int, hi: int, scope: _Scope, use: str) -> None:
        """Inside count(n), id(n), labels(n)...: a bare variable is not its properties."""
        t = self.t
        for i in range(lo, hi):
            if t[i].ident in scope.labels and not (i + 1 < hi and t[i + 1].text == "."):
                continue
            self._expressions(i, i + 1, scope, use) if t[i].kind is not Kind.PUNCT else None
        # property accesses and nested calls still count
        self._properties_only(lo, hi, scope, use)

    def _properties_only(self, lo: int, hi: int, scope: _Scope, use: str) -> None:
        t = self.t
        for i in range(lo, hi - 2):
            name = t[i].ident
            if name in scope.labels and t[i + 1].text == "." and t[i + 2].ident:
                for label in scope.labels[name or ""]:
                    self._prop(label, t[i + 2].ident or "", use)

    def _map_projection(self, var: str, lo: int, hi: int, scope: _Scope, use: str) -> None:
        t = self.t
        for k in range(lo + 1, hi):
            if t[k].text == "." and k + 1 < hi:
                if t[k + 1].text == "*":
                    for label in scope.labels[var]:
                        self._prop(label, "*", use)
                elif t[k + 1].ident:
                    for label in scope.labels[var]:
                        self._prop(label, t[k + 1].ident or "", use)
        self._expressions(lo + 1, hi, scope, use, map_keys=True)

    def _is_pattern_paren(self, i: int) -> bool:
        """A `(` in an expression that starts or continues a pattern (has a connector)."""
        t = self.t
        prev = t[i - 1] if i > 0 else None
        if prev is not None and prev.kind is Kind.PUNCT and prev.text in ("-", "->", "<-"):
            return True
        close = self.pair[i]
        nxt = t[close + 1] if close + 1 < len(t) else None
        after = t[close + 2] if close + 2 < len(t) else None
        return (
            nxt is not None
            and nxt.kind is Kind.PUNCT
            and nxt.text in ("-", "<-")
            and after is not None
            and after.text in ("[", "-", "->", "(")
        )

    def _chain_end(self, i: int) -> int:
        """The index after a pattern chain (node, connectors, relationships, nodes...)."""
        t = self.t
        while i < len(t):
            tok = t[i]
            if tok.kind is Kind.PUNCT and tok.text in ("(", "["):
                i = self.pair[i] + 1
                continue
            if tok.kind is Kind.PUNCT and tok.text in ("-", "->", "<-", ">"):
                i += 1
                continue
            break
        return i

    def _pattern_chain(self, i: int, scope: _Scope) -> None:
        """A pattern inside an expression: a read of what it names. Variables it introduces
        are local to it (a pattern comprehension) and do not leak into the scope."""
        inner = _Scope(dict(scope.labels), set(scope.rels))
        self._patterns(i, self._chain_end(i), inner, "SELECT")

    def _subquery(self, brace: int, scope: _Scope, *, imports: bool) -> None:
        """CALL { ... } sees only what a leading WITH imports; EXISTS/COUNT/COLLECT { ... }
        see the outer variables."""
        close = self.pair[brace]
        if imports:
            inner = _Scope()
            first = brace + 1
            if first < close and keyword(self.t, first) == "WITH":
                end = self._clause_end(first + 1, close)
                for k in range(first + 1, end):
                    name = self.t[k].ident
                    if name in scope.labels:
                        inner.labels[name or ""] = scope.labels[name or ""]
                    if self.t[k].text == "*":
                        inner = _Scope(dict(scope.labels), set(scope.rels))
        else:
            inner = _Scope(dict(scope.labels), set(scope.rels))
        self._block(brace + 1, close, inner)
        if imports:  # what the subquery RETURNs joins the outer scope
            for name, labels in inner.labels.items():
                scope.labels.setdefault(name, labels)

    def _foreach(self, lo: int, hi: int, scope: _Scope) -> None:
        """FOREACH (x IN list | clauses): the clauses after `|` are analysed as a block."""
        t = self.t
        if lo >= hi or t[lo].text != "(":
            raise Malformed("FOREACH needs (variable IN list | clauses)")
        close = self.pair[lo]
        bar = next(
            (k for k in range(lo + 1, close) if t[k].text == "|" and self._depth_in(lo, k) == 0),
            None,
        )
        if bar is None:
            raise Malformed("FOREACH needs (variable IN list | clauses)")
        self._expressions(lo + 1, bar, scope, "selected")
        inner = _Scope(dict(scope.labels), set(scope.rels))
        inner.labels.pop(t[lo + 1].ident or "", None)
        self._block(bar + 1, close, inner)

    # -- SET / REMOVE / DELETE ------------------------------------------------------------

    def _set_items(self, lo: int, hi: int, scope: _Scope) -> None:
        t = self.t
        for a, b in self._split(lo, hi):
            name = t[a].ident
            targets = set(scope.labels.get(name or "", frozenset({ALL})))
            if a + 1 < b and t[a + 1].text in (":",):
                _, added, _ = self._var_and_labels(a, b)
                targets |= added
            for label in targets:
                self._use(label, "UPDATE")
            self._expressions(a + 1, b, scope, "selected")

    def _deletes(self, lo: int, hi: int, scope: _Scope) -> None:
        t = self.t
        for a, b in self._split(lo, hi):
            found = False
            for k in range(a, b):
                name = t[k].ident
                if name in scope.labels and not (k > 0 and t[k - 1].text == "."):
                    found = True
                    for label in scope.labels[name or ""]:
                        self._use(label, "DELETE")
            if not found:
                self._use(ALL, "DELETE")

    def _split(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Comma-separated items of a clause body at its own depth."""
        out, start, i = [], lo, lo
        while i < hi:
            tok = self.t[i]
            if tok.kind is Kind.PUNCT and tok.text in "([{":
                i = self.pair[i] + 1
                continue
            if tok.kind is Kind.PUNCT and tok.text == ",":
                out.append((start, i))
                start = i + 1
            i += 1
        if start < hi:
            out.append((start, hi))
        return out

    # -- WITH / RETURN projections --------------------------------------------------------

    def _project(self, lo: int, hi: int, scope: _Scope, clause: str) -> None:
        """After WITH, only the projected names stay visible: `WITH n, m AS x` keeps n's
        labels and gives x m's; a computed item binds a name with no labels."""
        if clause != "WITH":
            return
        end = self._clause_end(lo, hi)
        t = self.t
        items = self._split(lo, end)
        if any(b - a == 1 and t[a].text == "*" for a, b in items):
            return
        kept: dict[str, frozenset[str]] = {}
        for a, b in items:
            if b - a >= 1 and t[a].kind is Kind.WORD and t[a].upper == "DISTINCT":
                a += 1
            alias = ""
            if b - a >= 3 and t[b - 2].kind is Kind.WORD and t[b - 2].upper == "AS":
                alias = t[b - 1].ident or ""
                expr_end = b - 2
            else:
                expr_end = b
            source = t[a].ident if expr_end - a == 1 else None
            name = alias or (source or "")
            if source is not None and source in scope.labels:
                kept[name] = scope.labels[source]
        scope.labels = kept
        scope.rels = {r for r in scope.rels if r in kept}

    def _bare_item(self, a: int, b: int, scope: _Scope) -> bool:
        """`n` or `n AS m` (optionally DISTINCT) with n a bound entity variable."""
        t = self.t
        if a < b and t[a].kind is Kind.WORD and t[a].upper == "DISTINCT":
            a += 1
        if b - a == 3 and t[a + 1].kind is Kind.WORD and t[a + 1].upper == "AS":
            b = a + 1
        return b - a == 1 and t[a].ident in scope.labels

    def _alias(self, lo: int, hi: int) -> str:
        t = self.t
        for k in range(lo, hi - 1):
            if t[k].kind is Kind.WORD and t[k].upper == "AS":
                return t[k + 1].ident or ""
        return ""

    def _clause_end(self, lo: int, hi: int) -> int:
        t = self.t
        i = lo
        while i < hi:
            if t[i].kind is Kind.PUNCT and t[i].text in "([{":
                i = self.pair[i] + 1
                continue
            if keyword(t, i) in CLAUSES - {"OPTIONAL"} and keyword(t, i) != "":
                if keyword(t, i) not in ("ON",) or True:
                    return i
            i += 1
        return hi

    # -- bookkeeping ----------------------------------------------------------------------

    def _use(self, label: str, op: Operation) -> None:
        self.access[(label, op)] = None
        if self._collect is not None and op != "DDL":
            self._collect.add(label)

    def _prop(self, label: str, name: str, use: str) -> None:
        self.props[PropertyUse(label, name.lower(), use)] = None


def _op(mode: str) -> Operation:
    return "SELECT" if mode == "SELECT" else "INSERT"

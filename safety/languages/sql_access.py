"""What a SQL statement touches: every table with the operation it needs, the statement's
own (main) tables, and every column it reads, resolved to the table it comes from.

Tables are found wherever sqlglot puts an `exp.Table` (FROM, joins, subqueries, CTE bodies,
set-operation branches, DML targets) minus references to CTE names, resolved the way
PostgreSQL scopes them: a CTE is visible to later CTEs and to the main query, and to its own
body only under RECURSIVE, so `WITH s AS (SELECT * FROM s)` reads the real table `s`.
Columns are resolved per query block (SELECT, or the DML statement itself) through aliases;
an unqualified column counts against every table in scope (a false positive at worst, never
a miss), and a bare table alias used as a value (`SELECT u FROM users u`, a whole row) counts
as `*`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from safety.types import Operation, TableRef

_BLOCKS = (exp.Select, exp.Update, exp.Delete, exp.Insert)
_DDL = (exp.Create, exp.Drop, exp.Alter, exp.TruncateTable, exp.Analyze, exp.Comment)

# how a column is used, by the clause it sits in under its query block
_USE = {
    "where": "filtered on",
    "having": "filtered on",
    "joins": "joined on",
    "order": "ordered by",
    "group": "grouped by",
    "expressions": "selected",
    "returning": "returned",
    "qualify": "filtered on",
    "conflict": "written",
}


@dataclass(frozen=True, slots=True)
class ColumnUse:
    table: TableRef
    column: str  # lower-cased, "*" for a star or a whole-row reference
    use: str  # "selected", "filtered on", ...


def table_ref(node: exp.Table) -> TableRef:
    return TableRef(node.name.lower(), node.db.lower(), node.catalog.lower())


def is_real_table(node: exp.Table) -> bool:
    """A named table (not a table function such as read_csv(...) or generate_series(...))."""
    return isinstance(node.this, exp.Identifier)


def is_cte_reference(node: exp.Table) -> bool:
    """True when `node` names a CTE visible where it stands (see the module docstring)."""
    if node.args.get("db") or node.args.get("catalog") or not is_real_table(node):
        return False
    name = node.name.lower()
    child: exp.Expression = node
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            names = [c.alias_or_name.lower() for c in parent.expressions]
            index = next((i for i, c in enumerate(parent.expressions) if c is child), len(names))
            visible = names[: index + 1] if parent.args.get("recursive") else names[:index]
            if name in visible:
                return True
        else:
            with_ = parent.args.get("with_")
            if (
                isinstance(with_, exp.With)
                and with_ is not child
                and name in {c.alias_or_name.lower() for c in with_.expressions}
            ):
                return True
        child, parent = parent, parent.parent
    return False


def statement_operation(tree: exp.Expression) -> Operation | None:
    """The statement's class, or None for a statement kind sluice does not run."""
    if isinstance(tree, exp.Query):
        return "SELECT"
    if isinstance(tree, exp.Insert):
        return "INSERT"
    if isinstance(tree, exp.Update):
        return "UPDATE"
    if isinstance(tree, exp.Delete):
        return "DELETE"
    if isinstance(tree, _DDL):
        return "DDL"
    return None


def _real_tables_under(node: exp.Expression | None) -> list[exp.Table]:
    if not isinstance(node, exp.Expression):
        return []
    found = [node] if isinstance(node, exp.Table) else []
    found += [t for t in node.find_all(exp.Table) if t is not node]
    return [t for t in found if is_real_table(t) and not is_cte_reference(t)]


def _target(node: exp.Expression) -> exp.Table | None:
    target = node.this
    if isinstance(target, exp.Schema):
        target = target.this
    return target if isinstance(target, exp.Table) else None


def _owner(node: exp.Expression) -> exp.Expression | None:
    """The query block (SELECT or DML statement) a node belongs to."""
    parent = node.parent
    while parent is not None and not isinstance(parent, _BLOCKS):
        parent = parent.parent
    return parent


def table_access(tree: exp.Expression) -> list[tuple[TableRef, Operation]]:
    """(table, operation) for every table touched, deduplicated, in order of appearance.

    A DML target gets its write class (plus SELECT when RETURNING hands rows back; plus UPDATE
    for INSERT ... ON CONFLICT DO UPDATE); a DDL statement's own tables get DDL; every other
    table is read (SELECT).
    """
    ops: dict[int, list[str]] = {}

    def mark(tables: list[exp.Table], *operations: str) -> None:
        for t in tables:
            ops.setdefault(id(t), []).extend(operations)

    for node in tree.walk():
        if isinstance(node, exp.Insert):
            target = _target(node)
            extra = []
            conflict = node.args.get("conflict")
            if conflict is not None and "UPDATE" in str(conflict.args.get("action") or "").upper():
                extra.append("UPDATE")
            if node.args.get("returning") is not None:
                extra.append("SELECT")
            if target is not None:
                mark([target], "INSERT", *extra)
        elif isinstance(node, exp.Update):
            extra = ["SELECT"] if node.args.get("returning") is not None else []
            # MySQL's `UPDATE t1 JOIN t2 SET ...` may write either table
            mark([t for t in _real_tables_under(node.this) if _owner(t) is node], "UPDATE", *extra)
        elif isinstance(node, exp.Delete):
            extra = ["SELECT"] if node.args.get("returning") is not None else []
            if node.args.get("tables"):  # MySQL multi-table DELETE: any joined table
                joined = _real_tables_under(node.this)
                names = {t.alias_or_name.lower() for t in joined} | {t.name.lower() for t in joined}
                for ref in node.args["tables"]:
                    # `DELETE t1 FROM t1 ...`: t1 names a joined table (checked below); a
                    # name that is no joined table or alias is checked as a DELETE target
                    if isinstance(ref, exp.Table) and ref.name.lower() in names:
                        ops[id(ref)] = []
                    else:
                        ops[id(ref)] = ["DELETE"]
                mark(
                    [t for t in _real_tables_under(node.this) if _owner(t) is node],
                    "DELETE",
                    *extra,
                )
            elif (target := _target(node)) is not None:
                mark([target], "DELETE", *extra)
        elif isinstance(node, exp.Merge):
            if (target := _target(node)) is not None:
                mark([target], "INSERT", "UPDATE", "DELETE")
        elif isinstance(node, exp.Into):  # SELECT ... INTO creates a table
            mark(_real_tables_under(node), "DDL")
        elif isinstance(node, _DDL):
            mark([t for t in _real_tables_under(node) if _owner(t) is None], "DDL")

    out: dict[tuple[TableRef, str], None] = {}
    for t in _real_tables_under(tree):
        ref = table_ref(t)
        for op in ops.get(id(t), ["SELECT"]):
            out[(ref, op)] = None
    return list(out)


def main_tables(tree: exp.Expression) -> list[TableRef]:
    """The statement's own tables: a DML/DDL target, or what the outer query reads FROM
    (through CTEs and derived tables, not through WHERE subqueries)."""
    ctes = {c.alias_or_name.lower(): c.this for c in tree.find_all(exp.CTE)}
    seen: set[int] = set()

    def of(node: exp.Expression | None) -> list[TableRef]:
        if node is None or id(node) in seen:
            return []
        seen.add(id(node))
        if isinstance(node, exp.SetOperation):
            return of(node.left) + of(node.right)
        if isinstance(node, exp.Subquery | exp.Paren):
            return of(node.this)
        if isinstance(node, exp.Insert | exp.Update | exp.Delete):
            target = _target(node)
            return [table_ref(target)] if target is not None and is_real_table(target) else []
        if isinstance(node, _DDL):
            return [table_ref(t) for t in _real_tables_under(node) if _owner(t) is None]
        if isinstance(node, exp.Select):
            out: list[TableRef] = []
            for source in _sources(node):
                if isinstance(source, exp.Table):
                    if is_cte_reference(source):
                        out += of(ctes.get(source.name.lower()))
                    elif is_real_table(source):
                        out.append(table_ref(source))
                else:
                    out += of(source)
            return out
        return []

    return of(tree)


def _sources(block: exp.Expression) -> list[exp.Expression]:
    """The relations a query block reads directly: FROM, joins, UPDATE FROM, DELETE USING."""
    out: list[exp.Expression] = []
    if isinstance(block, exp.Update | exp.Delete | exp.Insert):
        target = block.this.this if isinstance(block.this, exp.Schema) else block.this
        if isinstance(target, exp.Expression):
            out.append(target)
            out += [j.this for j in target.args.get("joins") or []]
        using = block.args.get("using")
        if isinstance(using, list):
            out += using
    from_ = block.args.get("from_")
    if from_ is not None:
        out.append(from_.this)
        out += from_.expressions
    out += [j.this for j in block.args.get("joins") or []]
    return out


def _aliases(block: exp.Expression) -> dict[str, TableRef | None]:
    """alias/name -> real table (None for a derived table, CTE or table function)."""
    out: dict[str, TableRef | None] = {}
    for source in _sources(block):
        alias = source.alias_or_name.lower() if isinstance(source, exp.Expression) else ""
        if isinstance(source, exp.Table) and is_real_table(source) and not is_cte_reference(source):
            ref = table_ref(source)
            out[alias] = ref
            out.setdefault(ref.name, ref)
        elif alias:
            out[alias] = None
    if isinstance(block, exp.Insert):
        target = _target(block)
        if target is not None:
            out["excluded"] = table_ref(target)  # ON CONFLICT ... excluded.col
    return out


def column_uses(tree: exp.Expression) -> list[ColumnUse]:
    """Every column read or written, resolved to real tables (see the module docstring)."""
    scopes: dict[int, dict[str, TableRef | None]] = {}

    def aliases(block: exp.Expression) -> dict[str, TableRef | None]:
        got = scopes.get(id(block))
        if got is None:
            got = scopes[id(block)] = _aliases(block)
        return got

    def chain(node: exp.Expression) -> list[exp.Expression]:
        blocks = []
        block = _owner(node)
        while block is not None:
            blocks.append(block)
            block = _owner(block)
        return blocks

    def use_of(node: exp.Expression, block: exp.Expression) -> str:
        child = node
        while child.parent is not None and child.parent is not block:
            child = child.parent
        if isinstance(block, exp.Update) and child.arg_key == "expressions":
            return "written"
        return _USE.get(child.arg_key, "used")

    out: dict[ColumnUse, None] = {}
    for node in tree.walk():
        if (
            isinstance(node, exp.Star)
            and isinstance(node.parent, exp.Select | exp.Returning)
            and node.arg_key == "expressions"
        ):
            blocks = chain(node)
            if blocks:
                for ref in aliases(blocks[0]).values():
                    if ref is not None:
                        out[ColumnUse(ref, "*", "selected")] = None
        elif isinstance(node, exp.Column):
            blocks = chain(node)
            if not blocks:
                continue
            use = use_of(node, blocks[0])
            name = "*" if isinstance(node.this, exp.Star) else node.name.lower()
            qualifier = node.table.lower()
            for ref in _resolve(qualifier, name, blocks, aliases):
                if isinstance(ref, _Whole):
                    out[ColumnUse(ref.table, "*", use)] = None
                else:
                    out[ColumnUse(ref, name, use)] = None
        elif isinstance(node, exp.Join) and node.args.get("using"):
            blocks = chain(node)
            if blocks:
                for ident in node.args["using"]:
                    for ref in aliases(blocks[0]).values():
                        if ref is not None:
                            out[ColumnUse(ref, ident.name.lower(), "joined on")] = None
        elif isinstance(node, exp.Schema) and isinstance(node.parent, exp.Insert):
            target = _target(node.parent)
            if target is not None:
                for ident in node.expressions:
                    if isinstance(ident, exp.Identifier):
                        out[ColumnUse(table_ref(target), ident.name.lower(), "written")] = None
    return list(out)


@dataclass(frozen=True, slots=True)
class _Whole:
    table: TableRef


def _resolve(
    qualifier: str,
    name: str,
    blocks: list[exp.Expression],
    aliases: Callable[[exp.Expression], dict[str, TableRef | None]],
) -> list[TableRef | _Whole]:
    if qualifier:
        for block in blocks:
            scope = aliases(block)
            if qualifier in scope:
                ref = scope[qualifier]
                return [] if ref is None else [ref]
        # not an alias in scope (schema-qualified column, unknown): match by table name
        return [
            r for b in blocks for r in aliases(b).values() if r is not None and r.name == qualifier
        ]
    found: list[TableRef | _Whole] = []
    for block in blocks:
        scope = aliases(block)
        if name in scope and scope[name] is not None:
            found.append(_Whole(scope[name]))  # a whole-row reference
        found += [r for r in scope.values() if r is not None]
    return found

"""Render a stage's operator tree as the one DuckDB statement its fragments run.

Leaves read their inputs by name: a scan leaf reads the Arrow table registered as its
``scan_k`` name, an exchange leaf reads ``in_<stage>``. Every node becomes a SELECT over its
children's SELECTs, built as a sqlglot tree (names always quoted by sqlglot, never by hand)
and printed once; DuckDB's optimizer flattens the nesting.
"""

from __future__ import annotations

from functools import singledispatch

import sqlglot
from sqlglot import exp

from puffin.planner.logical import (
    Aggregate,
    Exchange,
    Filter,
    Join,
    Limit,
    Native,
    Plan,
    Project,
    Scan,
    SetOp,
    Sort,
    Values,
    Window,
)

JOINS = {"inner": ("", ""), "left": ("LEFT", ""), "full": ("FULL", "OUTER"), "semi": ("", "SEMI"),
         "anti": ("", "ANTI"), "cross": ("", "CROSS")}


def input_name(stage_id: int) -> str:
    return f"in_{stage_id}"


def to_sql(node: Plan, names: dict[int, str]) -> str:
    """The DuckDB statement for ``node``; ``names`` maps id(scan) to the name its rows are under."""
    return tree(node, names).sql(dialect="duckdb")


def _name(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _col(name: str) -> exp.Column:
    return exp.Column(this=_name(name))


def _as(e: exp.Expression, name: str) -> exp.Alias:
    return exp.Alias(this=e.copy(), alias=_name(name))  # copied: plan nodes keep their own trees


def _table(name: str) -> exp.Table:
    return exp.Table(this=_name(name))


def _from(q: exp.Expression, alias: str = "_t") -> exp.Subquery:
    return exp.Subquery(this=q, alias=exp.TableAlias(this=exp.to_identifier(alias)))


def _select(exprs: list[exp.Expression], source: exp.Expression) -> exp.Select:
    return exp.Select(expressions=exprs, from_=exp.From(this=source))


def _all_of(q: exp.Expression, alias: str = "_t") -> exp.Select:
    return _select([exp.Star()], _from(q, alias))


@singledispatch
def tree(node: Plan, names: dict[int, str]) -> exp.Query:
    raise TypeError(f"no SQL for {type(node).__name__}")


@tree.register
def _(node: Scan, names: dict[int, str]) -> exp.Query:
    q = _select([_as(_col(c), o) for c, o in zip(node.columns, node.schema)], _table(names[id(node)]))
    if node.filters:
        q = _all_of(q, "_s").where(exp.and_(*(f.copy() for f in node.filters)), copy=False)
    return q


@tree.register
def _(node: Values, names: dict[int, str]) -> exp.Query:
    return sqlglot.parse_one(node.sql, read="duckdb")


@tree.register
def _(node: Exchange, names: dict[int, str]) -> exp.Query:
    return _select([exp.Star()], _table(input_name(node.stage_id)))


@tree.register
def _(node: Filter, names: dict[int, str]) -> exp.Query:
    return _all_of(tree(node.child, names)).where(node.condition.copy(), copy=False)


@tree.register
def _(node: Project, names: dict[int, str]) -> exp.Query:
    return _select([_as(x, n) for n, x in node.exprs], _from(tree(node.child, names)))


@tree.register
def _(node: Join, names: dict[int, str]) -> exp.Query:
    kind = "cross" if node.kind == "inner" and node.condition is None else node.kind
    side, join_kind = JOINS[kind]
    join = exp.Join(this=_from(tree(node.right, names), "_r"), side=side or None, kind=join_kind or None)
    if kind != "cross":
        join.set("on", node.condition.copy() if node.condition is not None else exp.true())
    q = _all_of(tree(node.left, names), "_l")
    q.set("joins", [join])
    return q


@tree.register
def _(node: Aggregate, names: dict[int, str]) -> exp.Query:
    q = _select([_as(x, n) for n, x in node.keys + node.aggs], _from(tree(node.child, names)))
    if node.keys:
        q.set("group", exp.Group(expressions=[x.copy() for _, x in node.keys]))
    return q


@tree.register
def _(node: Window, names: dict[int, str]) -> exp.Query:
    return _select([exp.Star()] + [_as(x, n) for n, x in node.windows], _from(tree(node.child, names)))


@tree.register
def _(node: Sort, names: dict[int, str]) -> exp.Query:
    q = _all_of(tree(node.child, names))
    q.set("order", exp.Order(expressions=[k.copy() for k in node.keys]))
    return q


@tree.register
def _(node: Limit, names: dict[int, str]) -> exp.Query:
    q = _all_of(tree(node.child, names))
    if node.limit is not None:
        q.set("limit", exp.Limit(expression=exp.Literal.number(node.limit)))
    if node.offset:
        q.set("offset", exp.Offset(expression=exp.Literal.number(node.offset)))
    return q


@tree.register
def _(node: SetOp, names: dict[int, str]) -> exp.Query:
    kinds = {"union": exp.Union, "intersect": exp.Intersect, "except": exp.Except}
    left = exp.Subquery(this=_select([exp.Star()], exp.Subquery(this=tree(node.left, names))))
    right = exp.Subquery(this=_select([exp.Star()], exp.Subquery(this=tree(node.right, names))))
    return kinds[node.kind](this=left, expression=right, distinct=node.distinct)


@tree.register
def _(node: Native, names: dict[int, str]) -> exp.Query:
    """The user's statement, each table it reads bound by a CTE to the stage's input for it."""
    stmt = node.statement.copy()
    if "with_" not in type(stmt).arg_types:  # a PIVOT statement: as a subquery it can have CTEs
        stmt = _all_of(stmt, "_p")
    ctes = []
    for table, child, cols in zip(node.tables, node.inputs, node.columns):
        body = _select([_as(_col(i), c) for i, c in zip(child.schema, cols)], _from(tree(child, names)))
        ctes.append(exp.CTE(this=body, alias=exp.TableAlias(this=_name(table))))
    if ctes:
        with_ = stmt.args.get("with_")
        if with_ is None:
            stmt.set("with_", exp.With(expressions=ctes))
        else:
            with_.set("expressions", ctes + list(with_.expressions))
    return stmt

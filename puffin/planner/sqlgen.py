"""Render a stage's operator tree as the one DuckDB statement its fragments run.

Leaves read their inputs by name: a scan leaf reads the Arrow table registered as its
``scan_k`` name, an exchange leaf reads ``in_<stage>``. Every node becomes a SELECT over its
children's SELECTs; DuckDB's optimizer flattens the nesting.
"""

from __future__ import annotations

from functools import singledispatch

import sqlglot
from sqlglot import exp

from puffin.operators.sqltext import ident
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

JOIN_SQL = {"inner": "JOIN", "left": "LEFT JOIN", "full": "FULL OUTER JOIN", "semi": "SEMI JOIN", "anti": "ANTI JOIN"}


def e(x: exp.Expression) -> str:
    return x.sql(dialect="duckdb")


def input_name(stage_id: int) -> str:
    return f"in_{stage_id}"


@singledispatch
def to_sql(node: Plan, names: dict[int, str]) -> str:
    raise TypeError(f"no SQL for {type(node).__name__}")


@to_sql.register
def _(node: Scan, names: dict[int, str]) -> str:
    cols = ", ".join(f"{ident(c)} AS {ident(o)}" for c, o in zip(node.columns, node.schema))
    sql = f"SELECT {cols} FROM {ident(names[id(node)])}"
    if node.filters:
        sql = f"SELECT * FROM ({sql}) AS _s WHERE " + " AND ".join(f"({e(f)})" for f in node.filters)
    return sql


@to_sql.register
def _(node: Values, names: dict[int, str]) -> str:
    return node.sql


@to_sql.register
def _(node: Exchange, names: dict[int, str]) -> str:
    return f"SELECT * FROM {input_name(node.stage_id)}"


@to_sql.register
def _(node: Filter, names: dict[int, str]) -> str:
    return f"SELECT * FROM ({to_sql(node.child, names)}) AS _t WHERE {e(node.condition)}"


@to_sql.register
def _(node: Project, names: dict[int, str]) -> str:
    cols = ", ".join(f"{e(x)} AS {ident(n)}" for n, x in node.exprs)
    return f"SELECT {cols} FROM ({to_sql(node.child, names)}) AS _t"


@to_sql.register
def _(node: Join, names: dict[int, str]) -> str:
    left, right = to_sql(node.left, names), to_sql(node.right, names)
    if node.kind == "cross" or (node.kind == "inner" and node.condition is None):
        return f"SELECT * FROM ({left}) AS _l CROSS JOIN ({right}) AS _r"
    cond = e(node.condition) if node.condition is not None else "TRUE"
    return f"SELECT * FROM ({left}) AS _l {JOIN_SQL[node.kind]} ({right}) AS _r ON {cond}"


@to_sql.register
def _(node: Aggregate, names: dict[int, str]) -> str:
    cols = ", ".join(f"{e(x)} AS {ident(n)}" for n, x in node.keys + node.aggs)
    sql = f"SELECT {cols} FROM ({to_sql(node.child, names)}) AS _t"
    if node.keys:
        sql += " GROUP BY " + ", ".join(e(x) for _, x in node.keys)
    return sql


@to_sql.register
def _(node: Window, names: dict[int, str]) -> str:
    cols = ", ".join(f"{e(x)} AS {ident(n)}" for n, x in node.windows)
    return f"SELECT *, {cols} FROM ({to_sql(node.child, names)}) AS _t"


@to_sql.register
def _(node: Sort, names: dict[int, str]) -> str:
    keys = ", ".join(e(k) for k in node.keys)
    return f"SELECT * FROM ({to_sql(node.child, names)}) AS _t ORDER BY {keys}"


@to_sql.register
def _(node: Limit, names: dict[int, str]) -> str:
    sql = f"SELECT * FROM ({to_sql(node.child, names)}) AS _t"
    if node.limit is not None:
        sql += f" LIMIT {node.limit}"
    if node.offset:
        sql += f" OFFSET {node.offset}"
    return sql


@to_sql.register
def _(node: SetOp, names: dict[int, str]) -> str:
    op = node.kind.upper() + ("" if node.distinct else " ALL")
    return f"(SELECT * FROM ({to_sql(node.left, names)})) {op} (SELECT * FROM ({to_sql(node.right, names)}))"


@to_sql.register
def _(node: Native, names: dict[int, str]) -> str:
    """The user's statement, each table it reads bound by a CTE to the stage's input for it."""
    stmt = node.statement.copy()
    if "with_" not in type(stmt).arg_types:  # a PIVOT statement: as a subquery it can have CTEs
        stmt = exp.select("*").from_(stmt.subquery("_p"))
    ctes = []
    for table, child, cols in zip(node.tables, node.inputs, node.columns):
        body = sqlglot.parse_one(
            "SELECT " + ", ".join(f"{ident(i)} AS {ident(c)}" for i, c in zip(child.schema, cols))
            + f" FROM ({to_sql(child, names)}) AS _t", read="duckdb")
        ctes.append(exp.CTE(this=body, alias=exp.TableAlias(this=exp.to_identifier(table, quoted=True))))
    if ctes:
        with_ = stmt.args.get("with_")
        if with_ is None:
            stmt.set("with_", exp.With(expressions=ctes))
        else:
            with_.set("expressions", ctes + list(with_.expressions))
    return stmt.sql(dialect="duckdb")

"""Cardinality and size estimates: the numbers join ordering and exchange choices rest on.

Rough by design (row counts from Parquet footers, fixed selectivities per predicate shape);
they only need to rank plans, not predict them.
"""

from __future__ import annotations

from functools import singledispatch

import pyarrow as pa
from sqlglot import exp

from puffin.planner.logical import (
    Aggregate,
    Exchange,
    Filter,
    Join,
    Limit,
    Plan,
    Scan,
    SetOp,
    Values,
    columns_in,
    conjuncts,
)

SELECTIVITY = {exp.EQ: 0.1, exp.Like: 0.2, exp.In: 0.2, exp.Or: 0.5}
RANGE = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between)


def selectivity(preds) -> float:
    s = 1.0
    for p in preds:
        for c in conjuncts(p):
            if isinstance(c, RANGE):
                s *= 0.3
            else:
                s *= SELECTIVITY.get(type(c), 0.5)
    return s


def is_equi(c: exp.Expression, left: set[str], right: set[str]) -> bool:
    """An equality with one side over ``left`` columns and the other over ``right``."""
    if not isinstance(c, exp.EQ):
        return False
    a, b = columns_in(c.this), columns_in(c.expression)
    if not a or not b:
        return False
    return (a <= left and b <= right) or (a <= right and b <= left)


@singledispatch
def rows(plan: Plan) -> float:
    """Estimated output rows; Project, Sort and Window keep their input's count."""
    kids = plan.children()
    return rows(kids[0]) if kids else 1.0


@rows.register
def _(plan: Scan) -> float:
    return max(1.0, plan.source.rows * selectivity(plan.filters))


@rows.register
def _(plan: Values) -> float:
    return 1.0


@rows.register
def _(plan: Exchange) -> float:
    return 1000.0


@rows.register
def _(plan: Filter) -> float:
    return max(1.0, rows(plan.child) * selectivity([plan.condition]))


@rows.register
def _(plan: Join) -> float:
    lr, rr = rows(plan.left), rows(plan.right)
    if plan.kind in ("semi", "anti"):
        return max(1.0, lr * 0.5)
    if plan.kind == "full":
        return lr + rr
    equi = any(is_equi(c, set(plan.left.schema), set(plan.right.schema)) for c in conjuncts(plan.condition))
    if equi:
        # key/foreign-key join: the bigger side keeps the fraction of keys the smaller one kept
        # (its rows are lr / rr already: estimating them again doubles the work at every level)
        small, small_rows = (plan.right, rr) if rr <= lr else (plan.left, lr)
        return max(1.0, max(lr, rr) * min(1.0, small_rows / base_rows(small)))
    if plan.condition is None:
        return lr * rr
    return max(lr, lr * rr * 0.1)


@rows.register
def _(plan: Aggregate) -> float:
    if not plan.keys:
        return 1.0
    return max(1.0, rows(plan.child) * 0.1)


@rows.register
def _(plan: Limit) -> float:
    r = rows(plan.child)
    return min(r, plan.limit) if plan.limit is not None else r


@rows.register
def _(plan: SetOp) -> float:
    return rows(plan.left) + rows(plan.right)


def base_rows(plan: Plan) -> float:
    """Rows before any filtering: the key domain a join with ``plan`` is measured against."""
    if isinstance(plan, Scan):
        return max(1.0, float(plan.source.rows))
    if isinstance(plan, Join):
        if plan.kind in ("semi", "anti"):
            return base_rows(plan.left)
        return max(base_rows(plan.left), base_rows(plan.right))
    if isinstance(plan, Aggregate):
        return max(1.0, base_rows(plan.child) * 0.1) if plan.keys else 1.0
    if isinstance(plan, SetOp):
        return base_rows(plan.left) + base_rows(plan.right)
    kids = plan.children()
    return base_rows(kids[0]) if kids else max(1.0, rows(plan))


def _type_width(t: pa.DataType) -> int:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return 24
    if pa.types.is_decimal(t):
        return 16
    return 8


def width(plan: Plan) -> float:
    """Bytes per row."""
    if isinstance(plan, Scan):
        schema = plan.source.schema
        return float(sum(_type_width(schema.field(c).type) for c in plan.columns) or 8)
    return 12.0 * max(1, len(plan.schema))


def size(plan: Plan) -> float:
    return rows(plan) * width(plan)


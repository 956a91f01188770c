"""Push predicates towards the scans.

Filters move below projections (through plain renames), below aggregates (when they only
touch grouping columns), into the sides of joins, and finally into ``Scan.filters``. A WHERE
predicate that rejects NULLs from the inner side of a LEFT JOIN turns it into an inner join
(the shape sqlglot's subquery unnesting leaves behind), which then joins the reorderable region.
"""

from __future__ import annotations

import dataclasses

from sqlglot import exp

from puffin.planner.logical import (
    Aggregate,
    Filter,
    Join,
    Plan,
    Project,
    Scan,
    Sort,
    and_all,
    columns_in,
    conjuncts,
)

NULL_STRICT = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.Between, exp.In)
STRICT_PARTS = (
    exp.Column, exp.Identifier, exp.Literal, exp.Add, exp.Sub, exp.Mul, exp.Div,
    exp.Cast, exp.DataType, exp.Paren, exp.Neg, exp.Tuple,
)


def _rejects_nulls(c: exp.Expression, cols: set[str]) -> bool:
    """True when ``c`` cannot be TRUE if every column in ``cols`` is NULL."""
    if isinstance(c, exp.Not) and isinstance(c.this, exp.Is) and isinstance(c.this.expression, exp.Null):
        return isinstance(c.this.this, exp.Column) and c.this.this.name in cols
    if not isinstance(c, NULL_STRICT):
        return False
    if any(not isinstance(n, STRICT_PARTS) for n in c.iter_expressions() for n in n.walk()):
        return False
    return bool(columns_in(c) & cols)


def _filter(plan: Plan, preds: list[exp.Expression]) -> Plan:
    cond = and_all(preds)
    return Filter(plan, cond) if cond is not None else plan


def push(plan: Plan, preds: list[exp.Expression]) -> Plan:
    if isinstance(plan, Filter):
        return push(plan.child, preds + conjuncts(plan.condition))
    if isinstance(plan, Scan):
        return dataclasses.replace(plan, filters=plan.filters + tuple(preds)) if preds else plan
    if isinstance(plan, Project):
        return _through_project(plan, preds)
    if isinstance(plan, Join):
        return _through_join(plan, preds)
    if isinstance(plan, Aggregate):
        keys = {n: e for n, e in plan.keys if isinstance(e, exp.Column)}
        down = [p for p in preds if columns_in(p) and columns_in(p) <= set(keys)]
        rest = [p for p in preds if not any(p is d for d in down)]
        subst = [p.transform(lambda n: keys[n.name].copy() if isinstance(n, exp.Column) and n.name in keys else n) for p in down]
        return _filter(plan.with_children(push(plan.child, subst)), rest)
    if isinstance(plan, Sort):
        return plan.with_children(push(plan.child, preds))
    kids = plan.children()
    return _filter(plan.with_children(*(push(c, []) for c in kids)) if kids else plan, preds)


def _through_project(plan: Project, preds: list[exp.Expression]) -> Plan:
    renames = {n: e for n, e in plan.exprs if isinstance(e, (exp.Column, exp.Literal))}
    down, rest = [], []
    for p in preds:
        (down if columns_in(p) <= set(renames) else rest).append(p)
    subst = [
        p.transform(lambda n: renames[n.name].copy() if isinstance(n, exp.Column) and n.name in renames else n)
        for p in down
    ]
    return _filter(plan.with_children(push(plan.child, subst)), rest)


def _through_join(plan: Join, preds: list[exp.Expression]) -> Plan:
    lcols, rcols = set(plan.left.schema), set(plan.right.schema)
    kind = plan.kind
    if kind == "left" and any(_rejects_nulls(p, rcols) for p in preds):
        kind = "inner"
    if kind in ("inner", "cross"):
        left, right, keep = [], [], []
        for p in preds + conjuncts(plan.condition):
            cs = columns_in(p)
            if cs <= lcols:
                left.append(p)
            elif cs <= rcols:
                right.append(p)
            else:
                keep.append(p)
        cond = and_all(keep)
        return Join(push(plan.left, left), push(plan.right, right), "inner" if cond is not None else "cross", cond)
    above, left = [], []
    for p in preds:
        (left if kind != "full" and columns_in(p) <= lcols else above).append(p)
    right, keep = [], []
    for p in conjuncts(plan.condition):
        (right if kind != "full" and columns_in(p) and columns_in(p) <= rcols else keep).append(p)
    joined = Join(push(plan.left, left), push(plan.right, right), kind, and_all(keep))
    return _filter(joined, above)


def pushdown_filters(plan: Plan) -> Plan:
    return push(plan, [])


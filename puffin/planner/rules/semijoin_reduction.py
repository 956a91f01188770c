"""Filter an aggregate's input by the keys of a small relation it is joined with.

Decorrelated subqueries (TPC-H Q2, Q4, Q17, Q20) become ``small JOIN (SELECT k, agg(...) FROM big
GROUP BY k) ON small.x = k``: the aggregate runs over all of ``big`` although only the groups
matching ``small`` survive the join. Since a semi join on the grouping key keeps or drops whole
groups, ``GROUP BY k`` over ``big SEMI JOIN small ON big.k = small.x`` yields exactly the
surviving groups, HAVING included. The small side is planned twice (it is small: a scan with
filters, broadcast or read whole where the big side is scanned).
"""

from __future__ import annotations

import dataclasses
import itertools

from sqlglot import exp

from puffin.planner.logical import (
    Aggregate,
    Filter,
    Join,
    Plan,
    Project,
    Scan,
    and_all,
    col,
    conjuncts,
    transform_up,
    walk,
)
from puffin.planner.stats import rows, size

SMALL_BYTES = 32e6
_ids = itertools.count()


def _aggregate_below(plan: Plan) -> tuple[Aggregate, dict[str, str]] | None:
    """The Aggregate under renames/filters, with output name -> aggregate output name."""
    names = {n: n for n in plan.schema}
    node = plan
    while isinstance(node, (Project, Filter)):
        if isinstance(node, Project):
            inner = {n: e.name for n, e in node.exprs if isinstance(e, exp.Column)}
            names = {outer: inner[mid] for outer, mid in names.items() if mid in inner}
        node = node.child
    return (node, names) if isinstance(node, Aggregate) else None


def _replace(plan: Plan, old: Aggregate, new: Aggregate) -> Plan:
    if plan is old:
        return new
    kids = plan.children()
    return plan.with_children(*(_replace(c, old, new) for c in kids)) if kids else plan


def _fresh(plan: Plan) -> Plan:
    """A copy whose scans are new nodes (the physical planner tracks scans by identity)."""
    return transform_up(plan, lambda n: dataclasses.replace(n) if isinstance(n, Scan) else n)


def _selective(plan: Plan) -> bool:
    """Does ``plan`` filter anything? An unfiltered table's keys would let every group through."""
    return any((isinstance(n, Scan) and n.filters) or isinstance(n, Filter) or
               (isinstance(n, Join) and n.kind == "semi") for n in walk(plan))


def _narrow(other: Plan, cols: set[str]) -> Plan:
    """The smallest input of an inner-join tree that provides ``cols``: its keys are a superset
    of those surviving the whole join, which is all a semi-join filter needs."""
    while isinstance(other, Join) and other.kind in ("inner", "cross"):
        if cols <= set(other.left.schema):
            other = other.left
        elif cols <= set(other.right.schema):
            other = other.right
        else:
            break
    return other


def _reduce(side: Plan, other: Plan, cond: exp.Expression | None) -> Plan:
    found = _aggregate_below(side)
    if found is None:
        return side
    agg, names = found
    keys = {n: e.name for n, e in agg.keys if isinstance(e, exp.Column)}
    pairs = []
    for c in conjuncts(cond):
        if isinstance(c, exp.EQ) and isinstance(c.this, exp.Column) and isinstance(c.expression, exp.Column):
            a, b = c.this.name, c.expression.name
            if b in names and a in other.schema:
                a, b = b, a
            if a in names and b in other.schema and names[a] in keys:
                pairs.append((keys[names[a]], b))
    if not pairs:
        return side
    if size(other) > SMALL_BYTES or not _selective(other):
        other = _narrow(other, {o for _, o in pairs})
    if size(other) > SMALL_BYTES or rows(other) * 4 > rows(agg.child) or not _selective(other):
        return side
    tag = next(_ids)
    probe = Project(_fresh(other), tuple((f"__sj{tag}_{i}", col(o)) for i, (_, o) in enumerate(pairs)))
    on = and_all([exp.EQ(this=col(k), expression=col(f"__sj{tag}_{i}")) for i, (k, _) in enumerate(pairs)])
    reduced = agg.with_children(Join(agg.child, probe, "semi", on))
    return _replace(side, agg, reduced)


def semijoin_reduction(plan: Plan) -> Plan:
    kids = plan.children()
    if kids:
        plan = plan.with_children(*(semijoin_reduction(c) for c in kids))
    if isinstance(plan, Join) and plan.kind == "inner" and plan.condition is not None:
        left = _reduce(plan.left, plan.right, plan.condition)
        right = _reduce(plan.right, plan.left, plan.condition)
        if left is not plan.left or right is not plan.right:
            plan = plan.with_children(left, right)
    return plan

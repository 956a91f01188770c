"""Drop columns nobody reads, down to the scans (projection pushdown)."""

from __future__ import annotations

import dataclasses

from puffin.planner.logical import (
    Aggregate,
    Filter,
    Join,
    Limit,
    Plan,
    Project,
    Scan,
    SetOp,
    Sort,
    Window,
    columns_in,
)


def _cols(exprs) -> set[str]:
    out: set[str] = set()
    for e in exprs:
        out |= columns_in(e)
    return out


def prune(plan: Plan, need: set[str] | None) -> Plan:
    """Rebuild ``plan`` producing at least ``need`` (None: every column, e.g. the root)."""
    if isinstance(plan, Scan):
        if need is None:
            return plan
        keep = need | _cols(plan.filters)
        columns = tuple(c for n, c in plan.column_map.items() if n in keep)
        if not columns:  # SELECT count(*): read the narrowest thing there is
            columns = plan.columns[:1]
        return dataclasses.replace(plan, columns=columns)
    if isinstance(plan, Filter):
        req = None if need is None else need | columns_in(plan.condition)
        return plan.with_children(prune(plan.child, req))
    if isinstance(plan, Project):
        exprs = plan.exprs if need is None else tuple(x for x in plan.exprs if x[0] in need)
        exprs = exprs or plan.exprs[:1]
        return Project(prune(plan.child, _cols(e for _, e in exprs)), exprs)
    if isinstance(plan, Join):
        req = set(plan.schema) if need is None else set(need)
        if plan.condition is not None:
            req |= columns_in(plan.condition)
        left = prune(plan.left, req & set(plan.left.schema))
        right = prune(plan.right, req & set(plan.right.schema))
        return plan.with_children(left, right)
    if isinstance(plan, Aggregate):
        return plan.with_children(prune(plan.child, _cols(e for _, e in plan.keys + plan.aggs)))
    if isinstance(plan, Window):
        own = {n for n, _ in plan.windows}
        base = set(plan.child.schema) if need is None else (need - own)
        return plan.with_children(prune(plan.child, base | _cols(e for _, e in plan.windows)))
    if isinstance(plan, Sort):
        req = None if need is None else need | _cols(plan.keys)
        return plan.with_children(prune(plan.child, req))
    if isinstance(plan, Limit):
        return plan.with_children(prune(plan.child, need))
    if isinstance(plan, SetOp):
        return plan.with_children(prune(plan.left, None), prune(plan.right, None))
    return plan


def prune_columns(plan: Plan) -> Plan:
    return prune(plan, None)

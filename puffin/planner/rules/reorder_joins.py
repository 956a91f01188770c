"""Order inner joins from estimated row counts.

Each maximal region of inner/cross joins is flattened into its inputs and conjuncts, then
rebuilt left-deep: start from the largest input (it streams through the joins), then repeatedly
join the smallest input connected to what is joined so far by an equality, so small dimension
tables are joined (and broadcast) early and cross joins only happen when nothing connects.
"""

from __future__ import annotations

from sqlglot import exp

from puffin.planner.logical import Filter, Join, Plan, and_all, col, columns_in, conjuncts
from puffin.planner.stats import rows


def _flatten(plan: Plan, leaves: list[Plan], conds: list[exp.Expression]) -> None:
    if isinstance(plan, Join) and plan.kind in ("inner", "cross"):
        _flatten(plan.left, leaves, conds)
        _flatten(plan.right, leaves, conds)
        conds.extend(conjuncts(plan.condition))
    else:
        leaves.append(plan)


class _Classes:
    """Union-find over column names joined by equalities."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        while self.parent.get(x, x) != x:
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[ra] = rb
        return True


def _column_pair(c: exp.Expression) -> tuple[str, str] | None:
    if isinstance(c, exp.EQ) and isinstance(c.this, exp.Column) and isinstance(c.expression, exp.Column):
        return c.this.name, c.expression.name
    return None


def _implied(conds: list[exp.Expression], cols: list[set[str]]) -> list[exp.Expression]:
    """Equalities implied by transitivity (a = b AND b = c gives a = c) across inputs."""
    classes = _Classes()
    for c in conds:
        pair = _column_pair(c)
        if pair:
            classes.union(*pair)
    members: dict[str, list[str]] = {}
    for name in classes.parent:
        members.setdefault(classes.find(name), []).append(name)
    have = {frozenset(p) for p in map(_column_pair, conds) if p}
    owner = {c: i for i, cs in enumerate(cols) for c in cs}
    extra = []
    for names in members.values():
        for i, a in enumerate(sorted(names)):
            for b in sorted(names)[i + 1:]:
                if owner.get(a) != owner.get(b) and frozenset((a, b)) not in have:
                    extra.append(exp.EQ(this=col(a), expression=col(b)))
    return extra


def _greedy(leaves: list[Plan], conds: list[exp.Expression]) -> Plan:
    est = [rows(leaf) for leaf in leaves]
    cols = [set(leaf.schema) for leaf in leaves]
    conds = conds + _implied(conds, cols)
    # each conjunct's columns, as the inputs that provide them, computed once (-1: none does);
    # an equality's two sides apart: it connects input i to the joined ones when one side is
    # all joined and the other is i's alone (``is_equi``)
    owner = {c: i for i, cs in enumerate(cols) for c in cs}

    def inputs(names: set[str]) -> frozenset[int]:
        return frozenset(owner.get(n, -1) for n in names)

    info = []
    for c in conds:
        sides = None
        if isinstance(c, exp.EQ):
            a, b = columns_in(c.this), columns_in(c.expression)
            if a and b:
                sides = (inputs(a), inputs(b))
        info.append((c, inputs(columns_in(c)), sides))
    applied = _Classes()
    start = max(range(len(leaves)), key=lambda i: est[i])
    current, joined = leaves[start], {start}
    remaining = [i for i in range(len(leaves)) if i != start]
    pending = info
    while remaining:
        reach: set[int] = set()
        for _, _, sides in pending:
            if sides is not None:
                a, b = sides
                if len(b) == 1 and a <= joined:
                    reach |= b
                if len(a) == 1 and b <= joined:
                    reach |= a
        connected = [i for i in remaining if i in reach]
        pick = min(connected or remaining, key=lambda i: est[i])
        remaining.remove(pick)
        joined.add(pick)
        now = [c for c, needs, _ in pending if needs <= joined]
        pending = [x for x in pending if not x[1] <= joined]
        # an equality already implied by those applied so far would only repeat a filter
        now = [c for c in now if (p := _column_pair(c)) is None or applied.union(*p)]
        cond = and_all(now)
        current = Join(current, leaves[pick], "inner" if cond is not None else "cross", cond)
    rest = and_all([c for c, _, _ in pending])
    return Filter(current, rest) if rest is not None else current


def reorder_joins(plan: Plan) -> Plan:
    if isinstance(plan, Join) and plan.kind in ("inner", "cross"):
        leaves: list[Plan] = []
        conds: list[exp.Expression] = []
        _flatten(plan, leaves, conds)
        return _greedy([reorder_joins(leaf) for leaf in leaves], conds)
    kids = plan.children()
    return plan.with_children(*(reorder_joins(c) for c in kids)) if kids else plan

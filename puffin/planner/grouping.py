"""GROUP BY ROLLUP / CUBE / GROUPING SETS, planned as one distributed aggregate.

Every input row is repeated once per grouping set (a cross join with the set ids), the keys a
set does not group by are nulled, and one aggregate groups by the keys plus the set id, so the
partial/final split and the hash exchange work as for any GROUP BY. ``GROUPING(a, b)`` is a
constant per set id.
"""

from __future__ import annotations

import itertools

from sqlglot import exp

from puffin.planner.logical import Join, Plan, Project, Values, col

GROUPING_SET_NODES = (exp.Rollup, exp.Cube, exp.GroupingSets)
GID = "__gid"


def _items(e: exp.Expression) -> list[exp.Expression]:
    if isinstance(e, exp.Tuple):
        return list(e.expressions)
    if isinstance(e, exp.Paren):
        return [e.this]
    return [e]


def _sets_of(g: exp.Expression) -> list[list[exp.Expression]]:
    if isinstance(g, exp.Rollup):
        items = [_items(x) for x in g.expressions]
        return [[e for part in items[:i] for e in part] for i in range(len(items), -1, -1)]
    if isinstance(g, exp.Cube):
        items = [_items(x) for x in g.expressions]
        return [[e for keep, part in zip(mask, items) if keep for e in part]
                for mask in itertools.product((True, False), repeat=len(items))]
    if isinstance(g, exp.GroupingSets):
        out: list[list[exp.Expression]] = []
        for x in g.expressions:
            out += _sets_of(x) if isinstance(x, GROUPING_SET_NODES) else [_items(x)]
        return out
    return [[g]]


def grouping_sets(group: list[exp.Expression]) -> list[list[exp.Expression]] | None:
    """The sets a GROUP BY list stands for (the cross product of its parts), or None for a
    plain GROUP BY."""
    if not any(isinstance(g, GROUPING_SET_NODES) for g in group):
        return None
    sets: list[list[exp.Expression]] = [[]]
    for g in group:
        sets = [s + t for s in sets for t in _sets_of(g)]
    return sets


def _distinct(exprs: list[exp.Expression]) -> list[exp.Expression]:
    out: list[exp.Expression] = []
    for e in exprs:
        if not any(e == o for o in out):
            out.append(e)
    return out


def _in_sets(gid: exp.Expression, ids: list[int]) -> exp.Expression:
    if not ids:
        return exp.false()
    return exp.In(this=gid, expressions=[exp.Literal.number(i) for i in ids])


def expand(plan: Plan, sets: list[list[exp.Expression]], aliases: dict[str, exp.Expression]):
    """(expanded plan, key names, pairs key expression -> key column, GROUPING rewriter).

    The expanded plan has the input's columns, one nulled column per distinct key and the set
    id; the aggregate groups by the key columns and ``__gid``. ``aliases`` resolves select-list
    aliases used as GROUPING() arguments.
    """
    keys = _distinct([e for s in sets for e in s])
    ids = Values(f"SELECT * FROM (VALUES {', '.join(f'({i})' for i in range(len(sets)))}) AS __v(\"{GID}\")",
                 (GID,))
    crossed = Join(plan, ids, "cross")
    names = [f"__g{i}" for i in range(len(keys))]
    projected = [(n, col(n)) for n in plan.schema] + [(GID, col(GID))]
    for name, key in zip(names, keys):
        member = [i for i, s in enumerate(sets) if any(key == e for e in s)]
        if len(member) < len(sets):  # NULL in the rows of the sets that do not group by it
            projected.append((name, exp.Case(ifs=[exp.If(this=_in_sets(col(GID), member), true=key.copy())])))
        else:
            projected.append((name, key.copy()))
    pairs = [(key, col(name)) for key, name in zip(keys, names)]

    def grouping(e: exp.Expression) -> exp.Expression:
        """GROUPING(a, b, ...) -> the bit mask of the arguments the row's set does not group by."""
        def fn(node: exp.Expression) -> exp.Expression:
            if not isinstance(node, exp.Grouping):
                return node
            args = [a.unnest() for a in node.expressions]  # GROUPING((v % 3)) names the key v % 3
            args = [aliases.get(a.name, a) if isinstance(a, exp.Column) and not any(a == k for k in keys) else a
                    for a in args]
            ifs = []
            for i, s in enumerate(sets):
                mask = sum(1 << (len(args) - 1 - k) for k, a in enumerate(args)
                           if not any(a == x.unnest() for x in s))
                ifs.append(exp.If(this=exp.EQ(this=col(GID), expression=exp.Literal.number(i)),
                                  true=exp.Literal.number(mask)))
            return exp.Case(ifs=ifs)

        return e.transform(fn)

    return Project(crossed, tuple(projected)), names, pairs, grouping

"""[NOT] EXISTS (subquery over one table, correlated by an inequality) -> SEMI / ANTI JOIN.

Runs inside sqlglot's optimizer right after ``qualify`` (every column names its table), before
sqlglot's own ``unnest_subqueries``. That one handles any shape but turns a non-equality
correlation such as TPC-H Q21's ``l2.l_suppkey <> l1.l_suppkey`` into ARRAY_AGG plus list
filters; a semi join with the correlation as its ON condition is what a hash join wants.
EXISTS has no NULL subtleties, so the rewrite is exact.
"""

from __future__ import annotations

import itertools

from sqlglot import exp

_names = itertools.count()


def _simple(sub: exp.Expression) -> bool:
    if not isinstance(sub, exp.Select):
        return False
    if any(sub.args.get(k) for k in ("joins", "group", "having", "limit", "offset", "order", "distinct", "with_")):
        return False
    from_ = sub.args.get("from_")
    return (
        from_ is not None
        and isinstance(from_.this, exp.Table)
        and sub.args.get("where") is not None
        and not any(isinstance(e, exp.AggFunc) for p in sub.expressions for e in p.walk())
    )


def _correlated_inequality(sub: exp.Select) -> bool:
    """Is some WHERE conjunct a non-equality between the subquery's table and an outer one?

    Equality-only correlations are left to sqlglot, whose GROUP BY form lets the planner
    pre-aggregate the inner side before it is shuffled.
    """
    inner = sub.args["from_"].this.alias_or_name
    where = sub.args["where"].this
    for c in where.flatten() if isinstance(where, exp.And) else [where]:
        tables = {col.table for col in c.find_all(exp.Column)}
        if inner in tables and len(tables) > 1 and not isinstance(c, exp.EQ):
            return True
    return False


def _aliases(sel: exp.Select) -> set[str]:
    out = set()
    from_ = sel.args.get("from_")
    if from_ is not None:
        out.add(from_.this.alias_or_name)
    for j in sel.args.get("joins") or []:
        out.add(j.this.alias_or_name)
    return out


def _realias(cond: exp.Expression, old: str, new: str) -> exp.Expression:
    def fn(n: exp.Expression) -> exp.Expression:
        return exp.column(n.name, new, quoted=True) if isinstance(n, exp.Column) and n.table == old else n

    return cond.transform(fn)


def _rewrite_select(sel: exp.Select) -> None:
    where = sel.args.get("where")
    if where is None or sel.args.get("from_") is None:
        return
    keep, joins = [], []
    for c in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
        negated = isinstance(c, exp.Not) and isinstance(c.this, exp.Exists)
        node = c.this if negated else c
        sub = node.this if isinstance(node, exp.Exists) else None
        if isinstance(sub, exp.Subquery):
            sub = sub.this
        if sub is None or not _simple(sub) or not _correlated_inequality(sub):
            keep.append(c)
            continue
        table = sub.args["from_"].this.copy()
        cond = sub.args["where"].this.copy()
        inner = table.alias_or_name
        if inner in _aliases(sel):
            fresh = f"_semi{next(_names)}"
            cond = _realias(cond, inner, fresh)
            table.set("alias", exp.TableAlias(this=exp.to_identifier(fresh, quoted=True)))
        joins.append(exp.Join(this=table, kind="ANTI" if negated else "SEMI", on=cond))
    if not joins:
        return
    for j in joins:
        sel.append("joins", j)
    sel.set("where", exp.Where(this=exp.and_(*keep)) if keep else None)


def exists_to_semijoin(expression: exp.Expression) -> exp.Expression:
    for sel in list(expression.find_all(exp.Select)):
        _rewrite_select(sel)
    return expression

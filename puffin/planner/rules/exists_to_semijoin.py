"""[NOT] EXISTS (subquery over one table, correlated by an inequality) -> SEMI / ANTI JOIN,
and correlated ``x [NOT] IN (SELECT y FROM one table WHERE ...)`` likewise.

Runs inside sqlglot's optimizer right after ``qualify`` (every column names its table), before
sqlglot's own ``unnest_subqueries``. That one handles any shape but turns a non-equality
correlation such as TPC-H Q21's ``l2.l_suppkey <> l1.l_suppkey`` into ARRAY_AGG plus list
filters; a semi join with the correlation as its ON condition is what a hash join wants.
EXISTS has no NULL subtleties, so the rewrite is exact. Only top-level WHERE conjuncts are
rewritten (there FALSE and NULL both drop the row): IN becomes a semi join ON ``where AND
y = x``; NOT IN an anti join ON ``where AND (y = x OR y IS NULL OR x IS NULL)``, which keeps
a row exactly when every correlated ``y`` is known to differ from ``x`` (NOT IN's NULL rules).
Sqlglot leaves a correlated NOT IN alone and turns IN into ARRAY_AGG plus list filters.
Other positions are ``decorrelate``'s.
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


def _aliases(sel: exp.Select, visible: bool = False) -> set[str]:
    """The relations of a SELECT (``visible``: those whose columns it can name)."""
    out = set()
    from_ = sel.args.get("from_")
    if from_ is not None:
        out.add(from_.this.alias_or_name)
    for j in sel.args.get("joins") or []:
        if not (visible and j.is_semi_or_anti_join):
            out.add(j.this.alias_or_name)
    return out


def _realias(cond: exp.Expression, old: str, new: str) -> exp.Expression:
    def fn(n: exp.Expression) -> exp.Expression:
        return exp.column(n.name, new, quoted=True) if isinstance(n, exp.Column) and n.table == old else n

    return cond.transform(fn)


def _correlated_in(c: exp.Expression, outer: set[str]) -> exp.Select | None:
    """The subquery of ``x [NOT] IN (SELECT y FROM t WHERE ...)`` correlated to ``outer``."""
    node = c.this if isinstance(c, exp.Not) else c
    if not isinstance(node, exp.In) or not isinstance(node.args.get("query"), exp.Subquery):
        return None
    sub = node.args["query"].this
    if not _simple(sub) or len(sub.expressions) != 1 or isinstance(node.this, exp.Tuple):
        return None
    if any(isinstance(n, (exp.Subquery, exp.Exists, exp.Select)) for n in node.this.walk()):
        return None
    if any(isinstance(n, (exp.Subquery, exp.Exists, exp.Select)) for n in sub.walk() if n is not sub):
        return None
    inner = sub.args["from_"].this.alias_or_name
    tables = {col.table for col in sub.find_all(exp.Column)} - {inner}
    return sub if tables and tables <= outer else None


def _in_join(c: exp.Expression, sub: exp.Select, taken: set[str]) -> exp.Join:
    negated = isinstance(c, exp.Not)
    x = (c.this if negated else c).this.copy()
    table = sub.args["from_"].this.copy()
    y = sub.expressions[0].unalias().copy()
    cond = sub.args["where"].this.copy()
    inner = table.alias_or_name
    if inner in taken:
        fresh = f"_semi{next(_names)}"
        cond, y = _realias(cond, inner, fresh), _realias(y, inner, fresh)
        table.set("alias", exp.TableAlias(this=exp.to_identifier(fresh, quoted=True)))
    match: exp.Expression = exp.EQ(this=y, expression=x)
    if negated:
        match = exp.paren(exp.or_(match, exp.Is(this=y.copy(), expression=exp.Null()),
                                  exp.Is(this=x.copy(), expression=exp.Null())))
    return exp.Join(this=table, kind="ANTI" if negated else "SEMI", on=exp.and_(exp.paren(cond), match))


def _rewrite_select(sel: exp.Select) -> None:
    where = sel.args.get("where")
    if where is None or sel.args.get("from_") is None:
        return
    keep, joins = [], []
    visible, taken = _aliases(sel, visible=True), _aliases(sel)
    for c in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
        in_sub = _correlated_in(c, visible)
        if in_sub is not None:
            joins.append(_in_join(c, in_sub, taken))
            taken.add(joins[-1].this.alias_or_name)
            continue
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
        if inner in taken:
            fresh = f"_semi{next(_names)}"
            cond = _realias(cond, inner, fresh)
            table.set("alias", exp.TableAlias(this=exp.to_identifier(fresh, quoted=True)))
        joins.append(exp.Join(this=table, kind="ANTI" if negated else "SEMI", on=cond))
        taken.add(table.alias_or_name)
    if not joins:
        return
    for j in joins:
        sel.append("joins", j)
    sel.set("where", exp.Where(this=exp.and_(*keep)) if keep else None)


def exists_to_semijoin(expression: exp.Expression) -> exp.Expression:
    for sel in list(expression.find_all(exp.Select)):
        _rewrite_select(sel)
    return expression

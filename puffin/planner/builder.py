"""Build the logical plan from an optimized, fully qualified sqlglot AST.

Input is what ``bind`` returns: every column qualified by its table alias, every projection
aliased, correlated subqueries already turned into joins. Each SELECT becomes, bottom-up:
sources -> joins (as written) -> Filter(WHERE) -> Aggregate -> Filter(HAVING) -> Window ->
Project -> Aggregate(DISTINCT) -> Sort -> Limit. Rules then reshape it.
"""

from __future__ import annotations

import itertools

from sqlglot import exp

from puffin.errors import NotSupportedError
from puffin.planner.grouping import GID, expand, grouping_sets
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
    Values,
    Window,
    and_all,
    col,
    conjuncts,
    fresh,
)
from puffin.sources import Source

Built = tuple[Plan, list[str]]  # plan and the user-facing names of its columns
SUBQUERY_TYPES = (exp.Subquery, exp.Exists, exp.Select)
# The clauses each node kind consumes; any other clause present is refused (and the statement
# then runs whole in DuckDB), so nothing the user wrote is ever silently dropped.
CONSUMED = {
    exp.Select: {"with_", "expressions", "distinct", "from_", "joins", "where", "group", "having",
                 "qualify", "order", "limit", "offset"},
    exp.SetOperation: {"with_", "this", "expression", "distinct", "order", "limit", "offset"},
    exp.Subquery: {"this", "alias"},
    exp.Table: {"this", "alias", "db", "catalog"},
    exp.Join: {"this", "on", "side", "kind"},
    exp.Group: {"expressions", "all"},
    exp.With: {"expressions"},
    exp.Values: {"expressions", "alias"},
    exp.Limit: {"expression"},  # LIMIT 10 % (limit_options) is not consumed
    exp.Offset: {"expression"},
    exp.Ordered: {"this", "desc", "nulls_first"},
}


def check_consumed(node: exp.Expression) -> None:
    """Raise NotSupportedError naming the first clause of ``node`` the builder would not use."""
    for kind, consumed in CONSUMED.items():
        if isinstance(node, kind):
            for key, value in node.args.items():
                if key not in consumed and value not in (None, False, [], ""):
                    raise NotSupportedError(f"{key.upper().rstrip('_')} in {node.key.upper()}")
            return


def to_internal(e: exp.Expression) -> exp.Expression:
    """``"t"."c"`` becomes the internal column ``"t.c"``."""

    def fn(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.table:
            return col(f"{node.table}.{node.name}")
        return node

    return e.transform(fn)


def _is_aggregate(node: exp.Expression) -> bool:
    if isinstance(node, exp.Filter) and isinstance(node.this, exp.AggFunc):
        return True
    if isinstance(node, exp.AggFunc):
        parent = node.parent
        if isinstance(parent, exp.Window) and node.arg_key == "this":
            return False
        return not (isinstance(parent, exp.Filter) and node.arg_key == "this")
    return False


def _collect(exprs: list[exp.Expression], pred) -> list[exp.Expression]:
    found: list[exp.Expression] = []
    for e in exprs:
        for node in e.dfs(prune=lambda n: pred(n)):
            if pred(node) and not any(node == f for f in found):
                found.append(node)
    return found


def _replace(e: exp.Expression, pairs: list[tuple[exp.Expression, exp.Expression]]) -> exp.Expression:
    def fn(node: exp.Expression) -> exp.Expression:
        for old, new in pairs:
            if node == old:
                return new.copy()
        return node

    return e.transform(fn)


def _int_literal(node: exp.Expression | None, what: str) -> int | None:
    if node is None:
        return None
    value = node.expression if isinstance(node, (exp.Limit, exp.Offset)) else node
    if isinstance(value, exp.Literal) and not value.is_string:
        return int(value.this)
    raise NotSupportedError(f"{what} must be an integer literal, got {value.sql('duckdb')}")


def _uniquify(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n.lower(), 0)
        seen[n.lower()] = k + 1
        out.append(n if k == 0 else f"{n}__{k}")
    return out


class PlanBuilder:
    def __init__(self, tables: dict[str, Source]):
        self.tables = {k.lower(): v for k, v in tables.items()}
        self.ctes: list[dict[str, exp.Expression]] = []
        self._ids = itertools.count()

    # -- entry points -----------------------------------------------------------------------
    def build(self, node: exp.Expression) -> Built:
        check_consumed(node)
        with_ = node.args.get("with_") or node.args.get("with")
        if with_ is not None:
            check_consumed(with_)
            if with_.args.get("recursive"):
                raise NotSupportedError("WITH RECURSIVE")
            self.ctes.append({c.alias_or_name.lower(): c.this for c in with_.expressions})
        try:
            if isinstance(node, exp.Subquery):
                return self.build(node.this)
            if isinstance(node, exp.SetOperation):
                return self._setop(node)
            if isinstance(node, exp.Select):
                return self._select(node)
            raise NotSupportedError(f"{node.key.upper()} statement")
        finally:
            if with_ is not None:
                self.ctes.pop()

    # -- FROM ------------------------------------------------------------------------------
    def _cte(self, name: str) -> exp.Expression | None:
        for scope in reversed(self.ctes):
            if name.lower() in scope:
                return scope[name.lower()]
        return None

    def _relation(self, rel: exp.Expression) -> Plan:
        check_consumed(rel)
        alias = rel.alias_or_name
        alias_arg = rel.args.get("alias")
        alias_cols = [c.name for c in alias_arg.columns] if isinstance(alias_arg, exp.TableAlias) else []
        if isinstance(rel, exp.Table) and isinstance(rel.this, exp.Identifier):
            cte = None if rel.args.get("db") else self._cte(rel.name)
            if cte is not None:
                return self._rename(self.build(cte), alias, alias_cols)
            source = self.tables[rel.name.lower()]
            return Scan(source, alias, tuple(source.schema.names))
        if isinstance(rel, exp.Subquery):
            return self._rename(self.build(rel.this), alias, alias_cols)
        if isinstance(rel, exp.Values):
            inner = rel.copy()
            inner.set("alias", None)
            raw = tuple(f"col{i}" for i in range(len(rel.expressions[0].expressions)))
            cols = ", ".join(f'"{c}"' for c in raw)
            values = Values(f"SELECT * FROM ({inner.sql('duckdb')}) AS __v({cols})", raw)
            return self._rename((values, alias_cols or list(raw)), alias, [])
        if isinstance(rel, (exp.Lateral, exp.Unnest)):
            raise NotSupportedError(f"{rel.key.upper()} in FROM")
        raise NotSupportedError(f"{rel.key.upper()} in FROM: {rel.sql('duckdb')}")

    @staticmethod
    def _rename(built: Built, alias: str, names: list[str]) -> Plan:
        plan, user = built
        names = names or user
        return Project(plan, tuple((f"{alias}.{n}", col(o)) for o, n in zip(plan.schema, names)))

    def _joins(self, sel: exp.Select) -> Plan:
        from_ = sel.args.get("from_") or sel.args.get("from")
        if from_ is None:
            return Values('SELECT 1 AS "__one"', ("__one",))
        plan = self._relation(from_.this)
        for j in sel.args.get("joins") or []:
            check_consumed(j)
            right = self._relation(j.this)
            if j.args.get("using"):
                raise NotSupportedError("JOIN ... USING that could not be resolved to ON")
            on = j.args.get("on")
            cond = to_internal(on) if on is not None else None
            side, kind = (j.side or "").lower(), (j.kind or "").lower()
            if kind in ("semi", "anti"):
                plan = Join(plan, right, kind, cond)
            elif side == "right":
                plan = Join(right, plan, "left", cond)
            elif side in ("left", "full"):
                plan = Join(plan, right, side, cond)
            elif kind in ("", "inner", "cross", "outer"):
                plan = Join(plan, right, "inner" if cond is not None else "cross", cond)
            else:
                raise NotSupportedError(f"{kind.upper()} JOIN")
        return plan

    # -- SELECT ----------------------------------------------------------------------------
    def _select(self, sel: exp.Select) -> Built:
        if sel.args.get("distinct") is not None and sel.args["distinct"].args.get("on"):
            raise NotSupportedError("SELECT DISTINCT ON")
        plan = self._joins(sel)
        where = sel.args.get("where")
        if where is not None:
            rest = []
            for c in conjuncts(where.this):
                semi = self._in_subquery(plan, c)
                if semi is None:
                    rest.append(self._no_subqueries(to_internal(c), "WHERE"))
                else:
                    plan = semi
            if rest:
                plan = Filter(plan, and_all(rest))

        names, exprs = [], []
        for p in sel.expressions:
            names.append(p.alias_or_name)
            exprs.append(self._no_subqueries(to_internal(p.this if isinstance(p, exp.Alias) else p), "SELECT"))
        having = sel.args.get("having")
        having_e = to_internal(having.this) if having is not None else None
        order = sel.args.get("order")
        ordered = [o for o in order.expressions] if order is not None else []
        if len(ordered) == 1 and isinstance(ordered[0].this, exp.Var) and ordered[0].this.name.upper() == "ALL":
            ordered = [ordered[0].copy() for _ in exprs]  # ORDER BY ALL: every select item, in order
            for o, e in zip(ordered, exprs):
                o.set("this", e.copy())
        order_e = [to_internal(o.this) for o in ordered]  # (select items are internal already)

        qualify = sel.args.get("qualify")
        qualify_e = self._no_subqueries(to_internal(qualify.this), "QUALIFY") if qualify is not None else None

        group = sel.args.get("group")
        if group is not None:
            check_consumed(group)
        if group is not None and group.args.get("all"):  # every select item without an aggregate
            group_e = [e for e in exprs if not _collect([e], _is_aggregate) and e.find(exp.Window) is None]
        else:
            group_e = [to_internal(g) for g in group.expressions] if group is not None else []
        sets = grouping_sets(group_e)
        key_pairs: list[tuple[exp.Expression, exp.Expression]] = []
        if sets is None and any(e.find(exp.Grouping) for e in exprs + [having_e, qualify_e] + order_e if e):
            sets = [group_e]  # GROUPING() over a plain GROUP BY: one set
        if sets is not None:
            plan, key_names, key_pairs, grouping = expand(plan, sets, dict(zip(names, exprs)))
            exprs, order_e = [grouping(e) for e in exprs], [grouping(e) for e in order_e]
            having_e = grouping(having_e) if having_e is not None else None
            qualify_e = grouping(qualify_e) if qualify_e is not None else None
            group_e = [col(n) for n in key_names] + [col(GID)]
        extra = [x for x in (having_e, qualify_e) if x is not None]
        aggs = _collect(exprs + extra + order_e, _is_aggregate)
        if group is not None or aggs:
            keys = [(g.name if isinstance(g, exp.Column) else f"__k{i}", g) for i, g in enumerate(group_e)]
            named_aggs = [(f"__a{j}", a) for j, a in enumerate(aggs)]
            plan = Aggregate(plan, tuple(keys), tuple(named_aggs))
            pairs = [(a, col(n)) for n, a in named_aggs] + [(g, col(n)) for n, g in keys] + key_pairs
            exprs = [_replace(e, pairs) for e in exprs]
            having_e = _replace(having_e, pairs) if having_e is not None else None
            qualify_e = _replace(qualify_e, pairs) if qualify_e is not None else None
            order_e = [_replace(e, pairs) for e in order_e]
        if having_e is not None:
            plan = Filter(plan, self._no_subqueries(having_e, "HAVING"))

        windows = _collect(exprs + order_e + ([qualify_e] if qualify_e is not None else []),
                           lambda n: isinstance(n, exp.Window))
        if windows:
            named_w = [(f"__w{i}", w) for i, w in enumerate(windows)]
            plan = Window(plan, tuple(named_w))
            pairs = [(w, col(n)) for n, w in named_w]
            exprs = [_replace(e, pairs) for e in exprs]
            order_e = [_replace(e, pairs) for e in order_e]
            qualify_e = _replace(qualify_e, pairs) if qualify_e is not None else None
        if qualify_e is not None:
            plan = Filter(plan, qualify_e)

        out = _uniquify(names)
        proj = list(zip(out, exprs))
        keys: list[exp.Ordered] = []
        for i, (o, e) in enumerate(zip(ordered, order_e)):
            target = None
            if isinstance(e, exp.Column) and e.name in out:
                target = e.name
            else:
                target = next((n for n, x in proj if x == e), None)
            if target is None:
                target = fresh(f"__o{i}", [n for n, _ in proj])
                proj.append((target, e))
            k = o.copy()
            k.set("this", col(target))
            keys.append(k)
        plan = Project(plan, tuple(proj))
        if sel.args.get("distinct") is not None:
            plan = Aggregate(plan, tuple((n, col(n)) for n in plan.schema), ())
        plan = self._sort_limit(plan, keys, sel)
        if len(proj) > len(out):
            plan = Project(plan, tuple((n, col(n)) for n in out))
        return plan, names

    def _in_subquery(self, plan: Plan, c: exp.Expression) -> Plan | None:
        """``x [NOT] IN (SELECT ...)`` as a semi (anti) join; None for any other predicate.

        NOT IN keeps SQL's NULL rules: a NULL on either side counts as a match, so a NULL
        ``x`` or a NULL in the subquery removes the row, and an empty subquery keeps it.
        """
        negated = isinstance(c, exp.Not)
        inner = c.this if negated else c
        if not (isinstance(inner, exp.In) and inner.args.get("query") is not None):
            return None
        sub, _ = self.build(inner.args["query"].this)
        if len(sub.schema) != 1:
            raise NotSupportedError("IN (subquery) returning more than one column")
        name = f"__in{next(self._ids)}"  # deterministic: EXPLAIN is the same on every run
        sub = Project(sub, ((name, col(sub.schema[0])),))
        x = self._no_subqueries(to_internal(inner.this), "IN")
        cond: exp.Expression = exp.EQ(this=x, expression=col(name))
        if negated:
            cond = exp.or_(cond, exp.Is(this=x.copy(), expression=exp.Null()),
                           exp.Is(this=col(name), expression=exp.Null()))
        return Join(plan, sub, "anti" if negated else "semi", cond)

    def _sort_limit(self, plan: Plan, keys: list[exp.Ordered], node: exp.Expression) -> Plan:
        for clause in (node.args.get("limit"), node.args.get("offset"), *keys):
            if clause is not None:
                check_consumed(clause)
        if keys:
            plan = Sort(plan, tuple(keys))
        limit = _int_literal(node.args.get("limit"), "LIMIT")
        offset = _int_literal(node.args.get("offset"), "OFFSET") or 0
        if limit is not None or offset:
            plan = Limit(plan, limit, offset)
        return plan

    def _setop(self, node: exp.SetOperation) -> Built:
        left, names = self.build(node.this)
        right, _ = self.build(node.expression)
        if len(left.schema) != len(right.schema):
            raise NotSupportedError(
                f"{node.key.upper()} of {len(left.schema)} and {len(right.schema)} columns"
            )
        right = Project(right, tuple((n, col(o)) for n, o in zip(left.schema, right.schema)))
        kind = {"union": "union", "intersect": "intersect", "except": "except"}[node.key]
        plan: Plan = SetOp(left, right, kind, bool(node.args.get("distinct")))
        order = node.args.get("order")
        keys = []
        for o in order.expressions if order is not None else []:
            e = o.this
            name = e.name if isinstance(e, exp.Column) else None
            if name not in plan.schema:
                raise NotSupportedError(f"ORDER BY {e.sql('duckdb')} on a set operation (use an output column)")
            k = o.copy()
            k.set("this", col(name))
            keys.append(k)
        return self._sort_limit(plan, keys, node), names

    @staticmethod
    def _no_subqueries(e: exp.Expression, clause: str) -> exp.Expression:
        sub = e.find(*SUBQUERY_TYPES)
        if sub is not None:
            raise NotSupportedError(
                f"subquery in {clause} that could not be decorrelated: {sub.sql('duckdb')[:200]}"
            )
        return e

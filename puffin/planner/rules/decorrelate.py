"""Correlated subqueries that sqlglot's ``unnest_subqueries`` cannot unnest, as LEFT JOINs.

Runs inside sqlglot's optimizer after ``qualify`` and ``exists_to_semijoin``, before sqlglot's
own ``unnest_subqueries``. Each correlated subquery ``S`` of a SELECT ``P`` (in its select
list, WHERE, GROUP BY or HAVING, at any depth: under OR, NOT, CASE, arithmetic, an aggregate's
argument) becomes a derived table ``d`` with one row per value of the correlation, LEFT JOINed
to ``P`` (so ``P`` keeps its rows, one for one); the subquery itself becomes an expression over
``d``'s columns, and the same subquery written twice (GROUP BY and select list) shares one
join. Subqueries are taken innermost first. Two forms of ``d``:

* equality form, when every outer reference sits in a WHERE conjunct ``inner_expr = outer_col``:
  ``S``'s rows grouped by the inner expressions, joined back with ``=``. A NULL on either side
  never satisfies the correlation, and it never matches the join either: the outer row sees
  the empty set in both cases.
* general form (any other correlation: inequalities, OR, outer columns inside aggregates):
  ``o = SELECT DISTINCT <outer columns> FROM <P's sources>`` joined to ``S``'s sources ON the
  correlation predicates, grouped by ``o``'s columns, joined back on the outer columns
  (``o`` reads only the outer table involved, with P's WHERE conjuncts over it alone, when
  that gives every value P evaluates; else P's whole FROM and subquery-free WHERE). A
  column that the correlation predicates reject when NULL (it sits in a strict comparison)
  joins back with ``=`` (its NULL rows would see the empty set, which is what a missed LEFT
  JOIN gives); any other with ``IS NOT DISTINCT FROM``, so NULL keys find their own row.

What ``S`` computes, and what replaces it (``d.x`` is ``MAX(d.x)`` where the subquery is
evaluated after ``P``'s own aggregation, where ``d.x`` is constant per group):

* scalar with aggregates (count, sum, avg, min, max, stddev, ... and expressions over them):
  each aggregate is a column of ``d``; COUNT becomes ``COALESCE(d.n, 0)`` (the COUNT bug).
* scalar without aggregate: ``d`` keeps ``count(*)`` and ``max(value)``, and the replacement
  raises DuckDB's own "More than one row returned by a subquery" error when a row that is
  evaluated sees more than one.
* [NOT] EXISTS: ``d.n IS NOT NULL`` (a mark join). Top-level WHERE conjuncts with an equality
  correlation are left to sqlglot (a semi join of its GROUP BY form), and those with an
  inequality over one table were made semi/anti joins by ``exists_to_semijoin``.
* ``x [NOT] IN (S)``: ``x``'s columns join the correlation, ``d`` counts rows, matches and NULLs,
  and a CASE gives IN's three-valued answer (top-level WHERE conjuncts over one table are
  ``exists_to_semijoin``'s semi/anti joins). An *uncorrelated* IN where FALSE and NULL differ
  (select list, under OR or NOT), which sqlglot unnests to FALSE where DuckDB says NULL, gets
  the same CASE over ``S``'s distinct values (LEFT JOIN on ``= x``) and one row of counts.

Anything else is left exactly as it was (sqlglot or the single-task fallback runs it): LIMIT,
ORDER BY, GROUP BY, DISTINCT or HAVING inside ``S``, nested subqueries, correlation to a
grandparent, outer columns in ``S``'s JOIN conditions or inside a derived table of ``S``,
ANY/ALL, subqueries in ON, ORDER BY or window functions, aggregates whose value on no rows is
not listed below (or functions sqlglot does not know), a ``P`` whose sources sample or draw
random values (``o`` would read other rows), a post-aggregation subquery correlated on a
column that is not a plain GROUP BY key.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

# empty input: COUNT-like aggregates give 0, these give NULL
ZERO_ON_EMPTY = (exp.Count, exp.ApproxDistinct)
NULL_ON_EMPTY = (
    exp.Sum, exp.Avg, exp.Min, exp.Max, exp.Stddev, exp.StddevSamp, exp.StddevPop, exp.Variance,
    exp.VariancePop, exp.Median, exp.AnyValue, exp.First, exp.Last, exp.ArgMax, exp.ArgMin,
    exp.LogicalAnd, exp.LogicalOr, exp.GroupConcat, exp.ArrayAgg, exp.CountIf, exp.Mode,
    exp.Kurtosis, exp.Skewness, exp.CovarPop, exp.CovarSamp, exp.Corr, exp.PercentileCont,
    exp.PercentileDisc, exp.BitwiseOrAgg, exp.BitwiseAndAgg, exp.BitwiseXorAgg,
)
STRICT_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between)
STRICT_WRAPPERS = (exp.Paren, exp.Neg, exp.Cast, exp.TryCast, exp.Add, exp.Sub, exp.Mul, exp.Div,
                   exp.IntDiv, exp.Mod)
SUBQUERIES = (exp.Subquery, exp.Exists, exp.Select)
VOLATILE = (exp.Rand, exp.Randn, exp.Uuid)  # a second evaluation could draw other values
VOLATILE_NAMES = {"setseed", "nextval", "currval", "random", "uuid", "gen_random_uuid"}
S_CLAUSES_REFUSED = ("with_", "group", "having", "qualify", "order", "limit", "offset", "distinct",
                     "windows", "laterals", "pivots", "connect", "match", "sample", "settings")
TOO_MANY_ROWS = ("More than one row returned by a subquery used as an expression - "
                 "scalar subqueries can only return a single row.")

Key = tuple[str, str]  # (table alias, column name) of an outer column


class _Skip(Exception):
    """This subquery is left as it was."""


def decorrelate(expression: exp.Expression) -> exp.Expression:
    selects, nested = [], False
    for n in expression.walk(bfs=False):  # one walk: queries without subqueries cost only this
        if isinstance(n, exp.Select):
            selects.append(n)
        elif isinstance(n, (exp.Exists, exp.Subquery)):
            nested = True
    if not nested:
        return expression
    names = _Names(expression)
    for parent in reversed(selects):  # innermost first: an inner rewrite may free an outer one
        if parent.args.get("from_") is not None:
            _rewrite_parent(parent, names)
    return expression


class _Names:
    """Fresh aliases that no table, column or alias of the query uses."""

    def __init__(self, root: exp.Expression):
        self.root = root
        self.used: set[str] | None = None  # filled on the first rewrite
        self.n = 0

    def __call__(self, prefix: str) -> str:
        if self.used is None:
            self.used = {i.name.lower() for i in self.root.find_all(exp.Identifier)}
        while True:
            name = f"{prefix}{self.n}"
            self.n += 1
            if name not in self.used:
                self.used.add(name)
                return name


def _alias(e: exp.Expression, name: str) -> exp.Alias:
    return exp.Alias(this=e, alias=exp.to_identifier(name, quoted=True))


# -- the parent SELECT ------------------------------------------------------------------------
def _sources(sel: exp.Select) -> dict[str, exp.Expression]:
    """alias -> relation, for the relations whose columns the SELECT sees."""
    out = {}
    from_ = sel.args.get("from_")
    if from_ is not None:
        out[from_.this.alias_or_name] = from_.this
    for j in sel.args.get("joins") or []:
        if not j.is_semi_or_anti_join:
            out[j.this.alias_or_name] = j.this
    return out


def _own_nodes(root: exp.Expression, types):
    """Nodes of ``types`` under ``root`` that are not inside a nested query."""
    for node in root.walk(prune=lambda n: n is not root and isinstance(n, SUBQUERIES)):
        if isinstance(node, types):
            yield node


def _candidates(parent: exp.Select):
    """(node, clause) for the subquery expressions directly in P's GROUP BY, WHERE, select list
    and HAVING (in that order: a select-list copy of a GROUP BY subquery reuses its rewrite)."""
    out = []
    group = parent.args.get("group")
    roots = [(e, "group") for e in group.expressions] if group is not None else []
    if parent.args.get("where") is not None:
        roots.append((parent.args["where"].this, "where"))
    roots += [(e, "select") for e in parent.expressions]
    if parent.args.get("having") is not None:
        roots.append((parent.args["having"].this, "having"))
    for root, clause in roots:
        stack = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, exp.Exists) or (isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select)):
                out.append((node, clause))
                continue
            if isinstance(node, exp.Select):
                continue
            stack.extend(node.iter_expressions())
    return out


def _is_aggregating(parent: exp.Select) -> bool:
    if parent.args.get("group") is not None:
        return True
    roots = list(parent.expressions) + ([parent.args["having"]] if parent.args.get("having") else [])
    for r in roots:
        for n in _own_nodes(r, exp.AggFunc):
            if not (isinstance(n.parent, exp.Window) and n.arg_key == "this"):
                return True
    return False


def _rewrite_parent(parent: exp.Select, names: _Names) -> None:
    cands = _candidates(parent)
    if not cands:
        return
    sources = _sources(parent)
    ctx = _Parent(parent, sources, list(parent.args.get("joins") or []), _is_aggregating(parent))
    done: list[tuple[exp.Expression, Callable[[bool], exp.Expression], bool]] = []
    for node, clause in cands:
        in_pred = node.parent if isinstance(node.parent, exp.In) and node.arg_key == "query" else None
        target = in_pred or node  # what the rewrite replaces
        try:
            inside_agg, top_level = _position(target, parent)
        except _Skip:
            continue
        post_agg = ctx.aggregating and clause in ("select", "having") and not inside_agg
        # the same subquery again (GROUP BY (SELECT ...) and its copy in the select list): one join
        hit = next(((make, grouped) for t, make, grouped in done if _same(t, target)), None)
        if hit is not None:
            make, grouped = hit
        else:
            try:
                make = _rewrite_one(ctx, node, in_pred, clause, post_agg, top_level, names)
            except _Skip:
                continue
            grouped = clause == "group"
            done.append((target, make, grouped))  # detached below, never changed again
        new = make(post_agg and not grouped)
        own_alias = target.args.get("alias") if isinstance(target, exp.Subquery) else None
        if own_alias is not None:
            new = _alias(new, own_alias.name)
        target.replace(new)


def _same(a: exp.Expression, b: exp.Expression) -> bool:
    """The same subquery (a select-list copy carries the output alias qualify gave it)."""
    if isinstance(a, exp.Subquery) and isinstance(b, exp.Subquery):
        return a.this == b.this
    return a == b


class _Parent:
    def __init__(self, sel: exp.Select, sources: dict[str, exp.Expression], joins: list[exp.Join],
                 aggregating: bool):
        self.sel = sel
        self.sources = sources
        self.joins = joins  # as written, before any join this rule adds
        self.aggregating = aggregating
        self.group_keys: set[Key] = set()
        group = sel.args.get("group")
        if group is not None:
            self.group_keys = {(g.table, g.name) for g in group.expressions if isinstance(g, exp.Column)}


# -- one subquery -------------------------------------------------------------------------------
def _position(node: exp.Expression, parent: exp.Select) -> tuple[bool, bool]:
    """(inside an aggregate of P, top-level WHERE conjunct possibly under NOT)."""
    inside_agg = False
    n = node
    while n.parent is not None and n.parent is not parent:
        n = n.parent
        if isinstance(n, exp.Window):
            raise _Skip
        if isinstance(n, (exp.AggFunc, exp.Filter)):
            inside_agg = True
    top = node
    if isinstance(top.parent, exp.Not):
        top = top.parent
    while isinstance(top.parent, (exp.And, exp.Paren)):
        top = top.parent
    return inside_agg, isinstance(top.parent, exp.Where)


def _rewrite_one(ctx: _Parent, node: exp.Expression, in_pred: exp.In | None, clause: str, post_agg: bool,
                 top_level: bool, names: _Names) -> Callable[[bool], exp.Expression]:
    """Add the LEFT JOIN for one subquery to P; return what builds its replacement (given
    whether that is evaluated after P's aggregation). Raises _Skip before changing anything."""
    parent = ctx.sel
    if isinstance(node.parent, (exp.Any, exp.All, exp.Tuple)):
        raise _Skip
    sub = node.this
    if not isinstance(sub, exp.Select) or len(sub.expressions) != 1:
        raise _Skip
    if in_pred is not None and not top_level and _closed(node):
        return _uncorrelated_in(ctx, sub, in_pred, post_agg, names)

    inner = _inner_sources(sub)
    is_exists = isinstance(node, exp.Exists)
    value = exp.Literal.number(1) if is_exists else sub.expressions[0].unalias()
    outer_refs = _outer_refs(sub, inner, ctx.sources, skip_projection=is_exists)
    if not outer_refs:
        raise _Skip  # uncorrelated: sqlglot's unnest_subqueries and the builder handle it
    if post_agg and not all((c.table, c.name) in ctx.group_keys for c in outer_refs):
        raise _Skip
    if any(isinstance(n, (exp.Window, exp.Anonymous)) for n in value.walk()):
        raise _Skip

    where = sub.args["where"].this if sub.args.get("where") is not None else None
    conjs = list(where.flatten()) if isinstance(where, exp.And) else ([where] if where is not None else [])
    corr = [c for c in conjs if _has_outer(c, ctx.sources, inner)]
    rest = [c for c in conjs if not _has_outer(c, ctx.sources, inner)]
    eq = _eq_keys(corr, ctx.sources, inner)

    if is_exists:
        # sqlglot's GROUP BY form (which the planner turns into a semi join) is as good, except
        # inside another subquery: a mark join there lets that one be decorrelated in turn
        if (top_level and eq is not None and where is not None and not where.find(exp.Or)
                and not any(c.table not in inner for c in sub.expressions[0].find_all(exp.Column))
                and parent.parent_select is None):
            raise _Skip
        kind = "exists"
    elif in_pred is not None:
        x = in_pred.this
        if isinstance(x, exp.Tuple) or any(isinstance(n, SUBQUERIES) for n in x.walk()):
            raise _Skip
        if any(isinstance(n, exp.AggFunc) for n in value.walk()):
            raise _Skip
        kind = "in"
    else:
        aggs = _aggregates(value)
        if aggs is None:
            raise _Skip
        kind = "agg" if aggs else "scalar"
        for a in aggs:
            cols = list(a.find_all(exp.Column))
            if cols and not any(c.table in inner for c in cols):
                raise _Skip  # an aggregate of outer columns only: it belongs to the outer query
        skeleton = value.copy()  # the projection with each aggregate a placeholder
        for j, a in enumerate(_aggregates(skeleton)):  # same walk order as aggs
            mark = exp.Placeholder(this=f"_a{j}")
            if a is skeleton:
                skeleton = mark
            else:
                a.replace(mark)
        if aggs and any(c.table in inner for c in skeleton.find_all(exp.Column)):
            raise _Skip  # an inner column outside any aggregate

    # outer columns in the projection (or on IN's left side) need the general form, except
    # outside the aggregates of an aggregate projection, where they stay the outer query's
    outer_keys = _keyset(outer_refs)
    proj_outer = [c for c in value.find_all(exp.Column) if (c.table, c.name) in outer_keys]
    if kind == "agg":
        proj_outer = [c for c in proj_outer if not _outside_aggs(c, value)]
    alias = names("_dc")
    if kind != "in" and not proj_outer and eq is not None:
        d, on, kmap = _equality_form(sub, eq, rest, alias)
    else:
        extra = list(in_pred.this.find_all(exp.Column)) if in_pred is not None else []
        if any(c.table not in ctx.sources for c in extra):
            raise _Skip
        d, on, kmap = _general_form(ctx, sub, corr, rest, outer_refs, extra, alias, names)

    def add(e: exp.Expression, name: str) -> None:
        d.append("expressions", _alias(e, name))

    one, zero = exp.Literal.number(1), exp.Literal.number(0)
    if kind == "agg":
        for j, a in enumerate(aggs):
            add(_map(a.copy(), kmap), f"_a{j}")
        zeros = {f"_a{j}" for j, a in enumerate(aggs) if _zero_on_empty(a)}
    elif kind == "scalar":
        add(exp.Count(this=exp.Star()), "_n")
        add(exp.Max(this=_map(value.copy(), kmap)), "_v")
    elif kind == "exists":
        add(exp.Count(this=exp.Star()), "_n")
    else:  # x IN (SELECT y ...)
        x = in_pred.this
        y = _map(value.copy(), kmap)
        add(exp.Count(this=exp.Star()), "_n")
        add(exp.Count(this=exp.Case(ifs=[exp.If(this=exp.EQ(this=y, expression=_map(x.copy(), kmap)),
                                                 true=one.copy())])), "_m")
        add(exp.Count(this=exp.Case(ifs=[exp.If(this=exp.Is(this=y.copy(), expression=exp.Null()),
                                                 true=one.copy())])), "_z")
    derived = exp.Subquery(this=d, alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
    parent.append("joins", exp.Join(this=derived, side="LEFT", on=on))

    def make(post_agg: bool) -> exp.Expression:
        def ref(name: str) -> exp.Expression:
            c = exp.column(name, alias, quoted=True)
            return exp.Max(this=c) if post_agg else c

        if kind == "agg":
            def fill(n: exp.Expression) -> exp.Expression:
                if isinstance(n, exp.Placeholder) and n.name in zeros:
                    return exp.Coalesce(this=ref(n.name), expressions=[zero.copy()])
                return ref(n.name) if isinstance(n, exp.Placeholder) else n

            return skeleton.transform(fill)
        if kind == "scalar":
            error = exp.Anonymous(this="error", expressions=[exp.Literal.string(TOO_MANY_ROWS)])
            return exp.Case(ifs=[exp.If(this=exp.GT(this=ref("_n"), expression=one.copy()), true=error)],
                            default=ref("_v"))
        if kind == "exists":
            return exp.Not(this=exp.Is(this=ref("_n"), expression=exp.Null()))
        # IN: TRUE on a match, FALSE on no rows, NULL when x or some y is NULL, else FALSE
        return exp.Case(
            ifs=[
                exp.If(this=exp.GT(this=exp.Coalesce(this=ref("_m"), expressions=[zero.copy()]),
                                   expression=zero.copy()), true=exp.true()),
                exp.If(this=exp.EQ(this=exp.Coalesce(this=ref("_n"), expressions=[zero.copy()]),
                                   expression=zero.copy()), true=exp.false()),
                exp.If(this=exp.or_(exp.Is(this=x.copy(), expression=exp.Null()),
                                    exp.GT(this=ref("_z"), expression=zero.copy())),
                       true=exp.cast(exp.Null(), exp.DataType.Type.BOOLEAN)),
            ],
            default=exp.false(),
        )

    return make


# -- the subquery -------------------------------------------------------------------------------
def _inner_sources(sub: exp.Select) -> set[str]:
    if any(sub.args.get(k) for k in S_CLAUSES_REFUSED):
        raise _Skip
    from_ = sub.args.get("from_")
    if from_ is None:
        raise _Skip
    rels = [from_.this] + [j.this for j in sub.args.get("joins") or []]
    out = set()
    for r in rels:
        if isinstance(r, exp.Subquery):
            _check_closed(r)
        elif not (isinstance(r, exp.Table) and isinstance(r.this, exp.Identifier)):
            raise _Skip
        out.add(r.alias_or_name)  # a semi/anti join's alias too: only its ON names it
    return out


def _closed(query: exp.Expression) -> bool:
    """Does ``query`` name only relations of its own (no correlation, at any depth)?"""
    defined = {t.alias_or_name for t in query.this.find_all(exp.Table, exp.Subquery) if t is not query}
    return all(c.table and c.table in defined for c in query.this.find_all(exp.Column))


def _check_closed(derived: exp.Subquery) -> None:
    """A derived table in S's FROM must not look outside itself."""
    if not _closed(derived):
        raise _Skip


def _uncorrelated_in(ctx: _Parent, sub: exp.Select, in_pred: exp.In, post_agg: bool,
                     names: _Names) -> Callable[[bool], exp.Expression]:
    """``x IN (S)``, S uncorrelated, where FALSE and NULL differ (select list, under OR or NOT):
    sqlglot's unnesting answers FALSE for NULL. ``S``'s distinct values joined on ``= x`` give
    the matches; one row of ``count(*)`` and NULL count (cross joined) gives the rest."""
    x = in_pred.this
    if isinstance(x, exp.Tuple) or any(isinstance(n, SUBQUERIES) for n in x.walk()):
        raise _Skip
    cols = list(x.find_all(exp.Column))
    if not cols or any(c.table not in ctx.sources for c in cols):
        raise _Skip
    if post_agg and (any(isinstance(n, exp.AggFunc) for n in x.walk())
                     or not all((c.table, c.name) in ctx.group_keys for c in cols)):
        raise _Skip
    name = sub.selects[0].alias_or_name
    if not name:
        raise _Skip
    m_alias, c_alias = names("_dc"), names("_dc")

    def values() -> exp.Subquery:
        return exp.Subquery(this=sub.copy(), alias=exp.TableAlias(this=exp.to_identifier(names("_sc"), quoted=True)))

    src = values()
    y = exp.column(name, src.alias, quoted=True)
    matches = exp.Select(expressions=[_alias(y, "_k0")]).from_(src, copy=False)
    matches.set("group", exp.Group(expressions=[y.copy()]))
    src = values()
    y = exp.column(name, src.alias, quoted=True)
    one = exp.Literal.number(1)
    counts = exp.Select(expressions=[
        _alias(exp.Count(this=exp.Star()), "_n"),
        _alias(exp.Count(this=exp.Case(ifs=[exp.If(this=exp.Is(this=y, expression=exp.Null()), true=one)])), "_z"),
    ]).from_(src, copy=False)
    parent = ctx.sel

    def derived(q: exp.Select, alias: str) -> exp.Subquery:
        return exp.Subquery(this=q, alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))

    parent.append("joins", exp.Join(this=derived(matches, m_alias), side="LEFT",
                                    on=exp.EQ(this=exp.column("_k0", m_alias, quoted=True), expression=x.copy())))
    parent.append("joins", exp.Join(this=derived(counts, c_alias), kind="CROSS"))  # exactly one row

    def make(post_agg: bool) -> exp.Expression:
        def ref(alias: str, col: str) -> exp.Expression:
            c = exp.column(col, alias, quoted=True)
            return exp.Max(this=c) if post_agg else c

        zero = exp.Literal.number(0)
        return exp.Case(
            ifs=[
                exp.If(this=exp.Not(this=exp.Is(this=ref(m_alias, "_k0"), expression=exp.Null())), true=exp.true()),
                exp.If(this=exp.EQ(this=ref(c_alias, "_n"), expression=zero.copy()), true=exp.false()),
                exp.If(this=exp.or_(exp.Is(this=x.copy(), expression=exp.Null()),
                                    exp.GT(this=ref(c_alias, "_z"), expression=zero.copy())),
                       true=exp.cast(exp.Null(), exp.DataType.Type.BOOLEAN)),
            ],
            default=exp.false(),
        )

    return make


def _own_columns(sub: exp.Select, skip_projection: bool):
    """Columns of S outside its derived tables; S may hold no other nested query."""
    from_ = sub.args["from_"]
    derived = {id(r) for r in [from_.this] + [j.this for j in sub.args.get("joins") or []]
               if isinstance(r, exp.Subquery)}
    roots = [a for k, a in sub.args.items() if a is not None and not (skip_projection and k == "expressions")]
    for root in roots:
        for r in root if isinstance(root, list) else [root]:
            if not isinstance(r, exp.Expression):
                continue
            for node in r.walk(prune=lambda n: id(n) in derived):
                if id(node) not in derived and isinstance(node, SUBQUERIES):
                    raise _Skip
                if isinstance(node, exp.Column):
                    yield node


def _outer_refs(sub: exp.Select, inner: set[str], outer: dict[str, exp.Expression],
                skip_projection: bool = False) -> list[exp.Column]:
    refs = []
    for c in _own_columns(sub, skip_projection):
        if not c.table:
            raise _Skip
        if c.table in inner:
            continue
        if c.table not in outer:
            raise _Skip  # a grandparent's column, or something qualify left alone
        refs.append(c)
    if refs:
        for j in sub.args.get("joins") or []:
            on = j.args.get("on")
            if j.args.get("using") or (on is not None and any(c.table not in inner for c in on.find_all(exp.Column))):
                raise _Skip  # correlation inside S's ON clauses
    return refs


def _has_outer(c: exp.Expression, outer: dict, inner: set[str]) -> bool:
    return any(col.table in outer and col.table not in inner for col in c.find_all(exp.Column))


def _keyset(cols) -> set[Key]:
    return {(c.table, c.name) for c in cols}


def _eq_keys(corr, outer, inner) -> list[tuple[exp.Expression, exp.Column]] | None:
    """[(inner expression, outer column)] when every correlation is ``inner = outer column``."""
    pairs = []
    for c in corr:
        if not isinstance(c, exp.EQ):
            return None
        for a, b in ((c.this, c.expression), (c.expression, c.this)):
            if (isinstance(b, exp.Column) and b.table in outer and b.table not in inner
                    and a.find(exp.Column) is not None
                    and all(x.table in inner for x in a.find_all(exp.Column))
                    and not any(isinstance(n, (exp.AggFunc, exp.Anonymous)) for n in a.walk())):
                pairs.append((a, b))
                break
        else:
            return None
    return pairs or None


def _aggregates(value: exp.Expression) -> list[exp.Expression] | None:
    """The aggregate calls in a projection, in walk order ([] for none); None when one of them
    is not understood (its value on no rows is not known here)."""
    out = []
    for n in value.walk(prune=lambda n: isinstance(n, (exp.AggFunc, exp.Filter, exp.IgnoreNulls, exp.RespectNulls))):
        agg = n
        while isinstance(agg, (exp.Filter, exp.IgnoreNulls, exp.RespectNulls)):
            agg = agg.this
        if agg is n and not isinstance(n, exp.AggFunc):
            continue
        if not isinstance(agg, exp.AggFunc):
            continue
        if not isinstance(agg, ZERO_ON_EMPTY + NULL_ON_EMPTY):
            return None
        out.append(n)
    return out


def _outside_aggs(c: exp.Expression, value: exp.Expression) -> bool:
    n = c
    while n is not None and n is not value.parent:
        if isinstance(n, (exp.AggFunc, exp.Filter)):
            return False
        n = n.parent
    return True


def _zero_on_empty(agg: exp.Expression) -> bool:
    while isinstance(agg, (exp.Filter, exp.IgnoreNulls, exp.RespectNulls)):
        agg = agg.this
    return isinstance(agg, ZERO_ON_EMPTY)


# -- the derived table ----------------------------------------------------------------------------
def _base(sub: exp.Select, rest: list[exp.Expression]) -> exp.Select:
    d = exp.Select()
    d.set("from_", sub.args["from_"].copy())
    for j in sub.args.get("joins") or []:
        d.append("joins", j.copy())
    if rest:
        d.set("where", exp.Where(this=exp.and_(*(c.copy() for c in rest))))
    return d


def _equality_form(sub, eq, rest, alias):
    d = _base(sub, rest)
    keys: list[tuple[str, exp.Expression]] = []
    on = []
    for a, b in eq:
        name = next((n for n, e in keys if e == a), None)
        if name is None:
            name = f"_k{len(keys)}"
            keys.append((name, a))
        on.append(exp.EQ(this=exp.column(name, alias, quoted=True), expression=b.copy()))
    for name, e in keys:
        d.append("expressions", _alias(e.copy(), name))
    d.set("group", exp.Group(expressions=[e.copy() for _, e in keys]))
    return d, exp.and_(*on), {}


def _strict_in(e: exp.Expression, key: Key) -> bool:
    if isinstance(e, exp.Column):
        return (e.table, e.name) == key
    if isinstance(e, STRICT_WRAPPERS):
        return any(_strict_in(x, key) for x in e.iter_expressions() if not isinstance(x, exp.DataType))
    return False


def _null_rejected(key: Key, corr: list[exp.Expression]) -> bool:
    """Does some correlation conjunct fail (not TRUE) whenever this outer column is NULL?"""
    return any(isinstance(c, STRICT_COMPARISONS) and any(_strict_in(x, key) for x in c.iter_expressions())
               for c in corr)


def _conjuncts(where: exp.Where | None) -> list[exp.Expression]:
    if where is None:
        return []
    return list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]


def _volatile(n: exp.Expression) -> bool:
    return isinstance(n, VOLATILE) or (isinstance(n, exp.Anonymous) and n.name.lower() in VOLATILE_NAMES)


def _o_source(ctx: _Parent, keys: list[Key], strict: set[Key]) -> exp.Select:
    """SELECT DISTINCT <outer columns> FROM <as little of P as gives every value P evaluates>.

    One outer table: that table, filtered by P's WHERE conjuncts over it alone (a superset of
    the values P sees, unless an outer join NULL-extends it and a NULL key matters). Otherwise
    P's FROM and joins with its subquery-free WHERE conjuncts."""
    tables = {t for t, _ in keys}
    parent = ctx.sel
    conjs = [c for c in _conjuncts(parent.args.get("where"))  # dropping one only adds keys
             if not any(isinstance(n, SUBQUERIES + VOLATILE + (exp.Anonymous,)) for n in c.walk())]
    if any(r.args.get("sample") is not None or any(_volatile(n) for n in r.walk())
           for r in ctx.sources.values()):
        raise _Skip  # TABLESAMPLE, random(): a second read of P's sources could differ
    o = exp.Select()
    if len(tables) == 1 and (not any(j.side for j in ctx.joins) or set(keys) <= strict):
        (t,) = tables
        o.set("from_", exp.From(this=ctx.sources[t].copy()))
        allowed = {t}
    else:
        for j in ctx.joins:
            on = j.args.get("on")
            if on is not None and any(isinstance(n, SUBQUERIES) or _volatile(n) for n in on.walk()):
                raise _Skip
        o.set("from_", parent.args["from_"].copy())
        for j in ctx.joins:
            o.append("joins", j.copy())
        allowed = set(ctx.sources)
    keep = [c.copy() for c in conjs
            if (cols := list(c.find_all(exp.Column))) and all(x.table in allowed for x in cols)]
    keep += [exp.Not(this=exp.Is(this=exp.column(n, t, quoted=True), expression=exp.Null()))
             for t, n in keys if (t, n) in strict]
    if keep:
        o.set("where", exp.Where(this=exp.and_(*keep)))
    for i, (t, n) in enumerate(keys):
        o.append("expressions", _alias(exp.column(n, t, quoted=True), f"_k{i}"))
    o.set("distinct", exp.Distinct())
    return o


def _general_form(ctx, sub, corr, rest, outer_refs, extra, alias, names):
    keys: list[Key] = []
    for c in list(outer_refs) + list(extra):
        k = (c.table, c.name)
        if k not in keys:
            keys.append(k)
    strict = {k for k in keys if _null_rejected(k, corr)}
    o = _o_source(ctx, keys, strict)
    oalias = names("_oc")
    kmap = {k: exp.column(f"_k{i}", oalias, quoted=True) for i, k in enumerate(keys)}
    d = _base(sub, rest)
    osub = exp.Subquery(this=o, alias=exp.TableAlias(this=exp.to_identifier(oalias, quoted=True)))
    if corr:
        d.append("joins", exp.Join(this=osub, on=exp.and_(*(_map(c.copy(), kmap) for c in corr))))
    else:
        d.append("joins", exp.Join(this=osub, kind="CROSS"))
    for i in range(len(keys)):
        d.append("expressions", _alias(exp.column(f"_k{i}", oalias, quoted=True), f"_k{i}"))
    d.set("group", exp.Group(expressions=[exp.column(f"_k{i}", oalias, quoted=True) for i in range(len(keys))]))
    on = []
    for i, (t, n) in enumerate(keys):
        left = exp.column(f"_k{i}", alias, quoted=True)
        right = exp.column(n, t, quoted=True)
        on.append(exp.EQ(this=left, expression=right) if (t, n) in strict
                  else exp.NullSafeEQ(this=left, expression=right))
    return d, exp.and_(*on), kmap


def _map(e: exp.Expression, kmap: dict) -> exp.Expression:
    if not kmap:
        return e

    def fn(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.Column) and (n.table, n.name) in kmap:
            return kmap[(n.table, n.name)].copy()
        return n

    return e.transform(fn, copy=False)


def alias_subquery_projections(expression: exp.Expression) -> exp.Expression:
    """Runs before ``qualify``: ``SELECT (SELECT ...) FROM t ORDER BY 1`` (or GROUP BY 1) makes
    sqlglot's qualify assert that the projection is an ``Alias``, since it names a bare subquery
    by setting the subquery's own alias. Give such projections the ``Alias`` qualify expects,
    with the name it would have chosen."""
    if not any(isinstance(n, exp.Subquery) for n in expression.walk()):
        return expression
    for sel in expression.find_all(exp.Select):
        positional = [e for k in ("group", "order") if sel.args.get(k) is not None
                      for e in sel.args[k].expressions]
        if not any((e.this if isinstance(e, exp.Ordered) else e).is_int for e in positional):
            continue
        for i, p in enumerate(sel.expressions):
            if isinstance(p, exp.Subquery):
                name = p.alias or f"_col_{i}"
                bare = p.copy()
                bare.set("alias", None)
                p.replace(exp.Alias(this=bare, alias=exp.to_identifier(name)))
    return expression

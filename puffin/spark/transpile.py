"""Puffin SQL (DuckDB's dialect) to Spark SQL, for the statements Puffin sends to Spark.

sqlglot does the dialect work (types, functions, literals, ``read_parquet(...)`` ->
``parquet.`...```); this module adds what Spark 3.5 + Iceberg need beyond it:

- ``CREATE [OR REPLACE] TABLE ...`` gets ``USING iceberg`` (the Spark route writes Iceberg).
- ``DELETE FROM t USING s WHERE c`` (DuckDB) -> ``DELETE FROM t WHERE EXISTS (SELECT 1 FROM s
  WHERE c)``: the same rows, and Spark has no ``DELETE ... USING``.
- ``UPDATE t SET ... FROM s WHERE c`` (DuckDB) -> ``MERGE INTO t USING s ON c WHEN MATCHED THEN
  UPDATE SET ...``. One difference: where several source rows match one target row DuckDB
  picks one, Spark fails with MERGE_CARDINALITY_VIOLATION.
- DuckDB's MERGE shorthands: ``WHEN MATCHED THEN UPDATE`` (whole row) -> ``UPDATE SET *``,
  ``WHEN NOT MATCHED THEN INSERT`` / ``INSERT BY NAME`` -> ``INSERT *``, and
  ``USING s USING (k, ...)`` -> ``ON t.k = s.k AND ...``; WHEN clauses in Spark's order (matched,
  not matched, not matched by source: they act on disjoint rows, so only the order within a
  kind matters, and it is kept).
- Types Spark lacks: HUGEINT -> DECIMAL(38, 0), UBIGINT -> DECIMAL(20, 0), UINTEGER -> BIGINT,
  USMALLINT -> INT, UTINYINT -> SMALLINT. (DuckDB's TIMESTAMP, without time zone, is already
  Spark's TIMESTAMP_NTZ, and TIMESTAMPTZ Spark's TIMESTAMP.)
- ``QUALIFY`` (Spark 3.5 has none; sqlglot moves it into a subquery): unaliased select items are
  first aliased with their DuckDB text, so the outer query can name them.

Table names stay as written: ``lake.db.t`` is the same table in Spark (conf.py registers each
Puffin catalog under its own name; the first is Spark's default catalog). ``RETURNING``,
``ON CONFLICT`` and ``INSERT OR REPLACE`` have no Spark form: NotSupportedError.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from puffin.errors import NotSupportedError, SqlSyntaxError

_TYPES = {
    exp.DataType.Type.INT128: exp.DataType.build("DECIMAL(38, 0)"),
    exp.DataType.Type.UBIGINT: exp.DataType.build("DECIMAL(20, 0)"),
    exp.DataType.Type.UINT: exp.DataType.build("BIGINT"),
    exp.DataType.Type.USMALLINT: exp.DataType.build("INT"),
    exp.DataType.Type.UTINYINT: exp.DataType.build("SMALLINT"),
}


def to_spark(statement: exp.Expression | str, read: str = "duckdb") -> str:
    """One Puffin statement (text or a parsed sqlglot tree, not modified) as Spark SQL text."""
    return spark_tree(statement, read).sql(dialect="spark")


def spark_tree(statement: exp.Expression | str, read: str = "duckdb") -> exp.Expression:
    """The statement in its Spark form, as a sqlglot tree (to print with dialect="spark")."""
    if isinstance(statement, str):
        try:
            tree = sqlglot.parse_one(statement, read=read)
        except sqlglot.errors.ParseError as e:
            raise SqlSyntaxError(f"cannot parse the statement for Spark: {e}") from None
    else:
        tree = statement.copy()
    _refuse(tree)
    tree = tree.transform(_type)
    if isinstance(tree, exp.Delete) and tree.args.get("using"):
        tree = _delete_using(tree)
    elif isinstance(tree, exp.Update) and tree.args.get("from_"):
        tree = _update_from(tree)
    if isinstance(tree, exp.Merge):
        _merge(tree)
    if isinstance(tree, exp.Create) and str(tree.args.get("kind", "")).upper() == "TABLE":
        _using_iceberg(tree)
    for select in tree.find_all(exp.Select):
        if select.args.get("qualify"):
            _alias_items(select, read)
    return tree


def changed_rows_query(tree: exp.Expression) -> str | None:
    """Spark SQL counting the rows an UPDATE or MERGE (in its Spark form) will change, to run
    just before it: Iceberg's commit summary cannot say for these (a copy-on-write commit counts
    every row of the files it rewrote; a merge-on-read MERGE's deletes and inserts mix updates,
    deletes and inserts). None for other statements, whose summaries are exact.

    A MERGE's count joins target and source as the MERGE does (each side marked; outer on the
    side whose unmatched rows a clause acts on) and counts a row when any clause of its kind
    applies (Spark applies the first that does; a row no clause applies to is left as it is):
    WHEN MATCHED for rows of both sides, WHEN NOT MATCHED [BY TARGET] for source rows alone
    (inserts), WHEN NOT MATCHED BY SOURCE for target rows alone."""
    if isinstance(tree, exp.Update):
        count = exp.select(exp.Count(this=exp.Star()).as_("n")).from_(tree.this.copy())
        if tree.args.get("where") is not None:
            count.set("where", tree.args["where"].copy())
        return count.sql(dialect="spark")
    if not isinstance(tree, exp.Merge):
        return None
    marks = {"target": "__puffin_target_row", "source": "__puffin_source_row"}

    def side(node: exp.Expression, mark: str) -> exp.Subquery:
        name = node.alias_or_name
        inner = exp.select(exp.Star(), exp.alias_(exp.true(), mark)).from_(node.copy())
        return inner.subquery(exp.to_identifier(name))

    target, source = tree.this, tree.args["using"]
    t_mark = exp.column(marks["target"], table=exp.to_identifier(target.alias_or_name))
    s_mark = exp.column(marks["source"], table=exp.to_identifier(source.alias_or_name))
    kinds: dict[str, list[exp.Expression]] = {"matched": [], "inserts": [], "by_source": []}
    for when in tree.args["whens"].expressions:
        kind = "matched" if when.args.get("matched") else "by_source" if when.args.get("source") else "inserts"
        cond = when.args.get("condition")
        kinds[kind].append(cond.copy() if cond is not None else exp.true())

    def any_of(conds: list[exp.Expression]) -> exp.Expression:
        return exp.or_(*[exp.paren(c) for c in conds]) if conds else exp.false()

    applies = (exp.Case()
               .when(exp.and_(t_mark.is_(exp.null()).not_(), s_mark.is_(exp.null()).not_()), any_of(kinds["matched"]))
               .when(s_mark.is_(exp.null()).not_(), any_of(kinds["inserts"]))
               .else_(any_of(kinds["by_source"])))
    # target rows alone are needed only for BY SOURCE clauses, source rows alone only for inserts
    join = {(True, True): "full outer", (True, False): "left", (False, True): "right",
            (False, False): "inner"}[(bool(kinds["by_source"]), bool(kinds["inserts"]))]
    count = (exp.select(exp.Count(this=exp.Star()).as_("n"))
             .from_(side(target, marks["target"]))
             .join(side(source, marks["source"]), on=tree.args["on"].copy(), join_type=join)
             .where(applies))
    return count.sql(dialect="spark")


def _refuse(tree: exp.Expression) -> None:
    for arg, what in (("returning", "RETURNING"), ("conflict", "ON CONFLICT")):
        if tree.args.get(arg):
            raise NotSupportedError(f"{what} has no Spark SQL form; Iceberg writes through Spark cannot use it")
    if isinstance(tree, exp.Insert) and tree.args.get("alternative"):
        raise NotSupportedError(f"INSERT OR {tree.args['alternative']} has no Spark SQL form; use MERGE INTO")


def _type(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.DataType) and node.this in _TYPES:
        return _TYPES[node.this].copy()
    return node


def _target_name(table: exp.Table) -> exp.Expression:
    """How the target's columns are qualified: its alias, else its table name."""
    return exp.to_identifier(table.alias_or_name)


def _delete_using(tree: exp.Delete) -> exp.Delete:
    where = tree.args.get("where")
    sub = exp.select("1").from_(tree.args["using"][0].copy())
    for extra in tree.args["using"][1:]:
        sub = sub.join(extra.copy(), join_type="cross")
    if where is not None:
        sub = sub.where(where.this.copy())
    out = tree.copy()
    out.set("using", None)
    out.set("where", exp.Where(this=exp.Exists(this=sub)))
    return out


def _update_from(tree: exp.Update) -> exp.Merge:
    source = tree.args["from_"].this
    if tree.args.get("joins") or source.args.get("joins"):
        raise NotSupportedError("UPDATE ... FROM with a join has no Spark SQL form; put the join in a "
                                "subquery: UPDATE t SET ... FROM (SELECT ... JOIN ...) AS s WHERE ...")
    where = tree.args.get("where")
    on = where.this.copy() if where is not None else exp.true()
    update = exp.Update(expressions=[e.copy() for e in tree.expressions])
    return exp.Merge(this=tree.this.copy(), using=source.copy(), on=on,
                     whens=exp.Whens(expressions=[exp.When(matched=True, then=update)]))


def _merge(tree: exp.Merge) -> None:
    keys = tree.args.get("using_cond")
    if keys:
        target, source = _target_name(tree.this), exp.to_identifier(tree.args["using"].alias_or_name)
        tree.set("on", exp.and_(*[exp.column(k.name, table=target.copy()).eq(exp.column(k.name, table=source.copy()))
                                  for k in keys]))
        tree.set("using_cond", None)
    # Spark's grammar takes WHEN MATCHED, then WHEN NOT MATCHED [BY TARGET], then WHEN NOT MATCHED
    # BY SOURCE clauses; DuckDB any order. The kinds apply to disjoint rows, so a stable sort by
    # kind keeps the meaning (within a kind the first clause that applies still wins)
    whens = tree.args["whens"]
    whens.set("expressions", sorted(whens.expressions, key=lambda w: 0 if w.args.get("matched") else
                                    2 if w.args.get("source") else 1))
    for when in whens.expressions:
        then = when.args.get("then")
        if isinstance(then, exp.Update) and not then.expressions:
            then.set("expressions", [exp.Star()])  # DuckDB: the whole row
        elif isinstance(then, exp.Insert) and _whole_row_insert(then):
            when.set("then", exp.Insert(this=exp.Star()))


def _whole_row_insert(insert: exp.Insert) -> bool:
    this = insert.this
    if not this and not insert.args.get("expression"):
        return True  # WHEN NOT MATCHED THEN INSERT
    # sqlglot reads DuckDB's INSERT BY NAME as a tuple holding "BY AS NAME"
    return (isinstance(this, exp.Tuple) and len(this.expressions) == 1 and isinstance(this.expressions[0], exp.Alias)
            and this.expressions[0].this.name.upper() == "BY" and this.expressions[0].alias.upper() == "NAME")


def _using_iceberg(tree: exp.Create) -> None:
    props = tree.args.get("properties")
    if props and any(isinstance(p, exp.FileFormatProperty) for p in props.expressions):
        return
    fmt = exp.FileFormatProperty(this=exp.var("iceberg"))
    if props:
        props.append("expressions", fmt)
    else:
        tree.set("properties", exp.Properties(expressions=[fmt]))


def _alias_items(select: exp.Select, read: str) -> None:
    items = []
    for item in select.expressions:
        if not isinstance(item, (exp.Alias, exp.Column, exp.Star)):
            item = exp.alias_(item, item.sql(dialect=read), quoted=True)
        items.append(item)
    select.set("expressions", items)

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
  ``USING s USING (k, ...)`` -> ``ON t.k = s.k AND ...``.
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
    return tree.sql(dialect="spark")


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
    for when in tree.args["whens"].expressions:
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

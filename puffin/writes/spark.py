"""Statements Spark SQL runs on the catalog Puffin reads: MERGE, UPDATE, DELETE, INSERT OVERWRITE,
CREATE OR REPLACE TABLE, partitioned CREATE TABLE, CALL of Iceberg's procedures, and reads
delegated with ``engine="spark"``.

The statement is transpiled by sqlglot (``puffin.spark.transpile``) after its names are made
Spark's: catalog tables fully qualified (``cat.ns.t``, the same name in Spark's catalog), and
every other table it reads (a registered table or frame, a file) computed by Puffin and staged
as Parquet (a local directory for local Spark, the EMR staging prefix for EMR), then read by
Spark as a temporary view. The Spark session is the connection's, started once
(``Connection._spark``). Spark's errors come back as ``ExecutionError`` with Spark's message.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid

import pyarrow as pa
from sqlglot import exp

from puffin.errors import BindError, ExecutionError
from puffin.result import Result

log = logging.getLogger("puffin.writes")


def session_client(settings, catalogs: dict[str, dict], s3):
    """The connection's Spark client (``puffin.spark``), made on first need."""
    from puffin.spark.client import make_client

    return make_client(settings, catalogs, s3)


def run(con, write, dialect: str, mode: str | None, timeout: float | None, entry: dict) -> Result:
    """A write statement (a ``SparkWrite``) on Spark; one row: rows_written, snapshot_id.

    Iceberg's commit summary gives an exact count for inserts, overwrites and deletes. For an
    UPDATE or MERGE it cannot (``puffin/spark/driver.py``), so the same job first counts the
    rows the statement will change (``transpile.changed_rows_query``) and that count is used;
    if the count fails (it informs, it does not decide), rows_written is NULL."""
    report, spark_sql = _submit(con, write.statement, dialect, mode, timeout, want_result=False,
                                count_changes=True)
    if report is None:
        return _text(f"Spark SQL ({con._spark_settings().mode}): {spark_sql}")
    info = next((s for s in reversed(report.statements) if s.get("table")), {})
    counted = next((s for s in report.statements if "value" in s), None)
    if counted is not None:
        if counted.get("value") is not None:
            info["rows"] = int(counted["value"])
        else:
            log.info("rows_written unknown: counting the rows the statement changes failed: %s",
                     counted.get("error"))
    entry["rows"] = int(info.get("rows") or 0)
    entry["engine"] = "spark"
    return Result(pa.table({"rows_written": pa.array([info.get("rows")], pa.int64()),
                            "snapshot_id": pa.array([info.get("snapshot_id")], pa.int64())}))


def call(con, stmt, mode: str | None, timeout: float | None, entry: dict) -> Result:
    """``CALL catalog.system.procedure(...)`` (a ``SparkCall``) on Spark: Iceberg's procedures
    return their rows (files removed, snapshots expired, ...), which come back as they are."""
    from puffin.spark.client import SparkJob

    catalogs = con._catalogs.configured()
    if not catalogs:
        raise BindError("CALL runs an Iceberg procedure on a catalog; configure one: connect(catalogs={...})")
    if stmt.catalog is not None and stmt.catalog not in catalogs:
        raise BindError(f"unknown catalog {stmt.catalog} in CALL; configured: {', '.join(sorted(catalogs))}")
    if mode == "explain":
        return _text(f"Spark SQL ({con._spark_settings().mode}): {stmt.text}")
    try:
        report = con._spark().run(SparkJob([stmt.text], want_result=True), timeout)
    except ExecutionError as e:
        # Iceberg's parser takes a CALL only of a procedure it has; Spark's own then fails at CALL
        if getattr(e, "error_class", None) == "PARSE_SYNTAX_ERROR" and "'CALL'" in str(e):
            name = f"{stmt.catalog + '.' if stmt.catalog else ''}system.{stmt.procedure}"
            err = ExecutionError(f"CALL {name}: Spark's Iceberg has no procedure named {stmt.procedure} "
                                 f"(Spark: {e})", remote_traceback=e.remote_traceback)
            err.error_class, err.statement = e.error_class, stmt.text
            raise err from None
        raise
    entry["engine"] = "spark"
    entry["rows"] = report.result.num_rows if report.result is not None else 0
    return Result(report.result if report.result is not None else pa.table({}))


def read(con, text: str, dialect: str, mode: str | None, timeout: float | None, entry: dict) -> Result:
    """A query run whole by Spark SQL; its rows come back as Arrow."""
    from puffin.planner.parse import parse_statement, retry_deep

    stmt = retry_deep(lambda: parse_statement(text, dialect))
    report, spark_sql = _submit(con, stmt, dialect, mode, timeout, want_result=True)
    if report is None:
        return _text(f"Spark SQL ({con._spark_settings().mode}): {spark_sql}")
    entry["engine"] = "spark"
    entry["rows"] = report.result.num_rows if report.result is not None else 0
    return Result(report.result if report.result is not None else pa.table({}))


def _submit(con, stmt: exp.Expression, dialect: str, mode: str | None, timeout: float | None, want_result: bool,
            count_changes: bool = False):
    from puffin.spark.client import SparkJob
    from puffin.spark.transpile import changed_rows_query, spark_tree

    stmt = stmt.copy()
    staged = _staged_tables(con, stmt)
    tree = spark_tree(stmt, read="duckdb")
    spark_sql = tree.sql(dialect="spark")
    count = changed_rows_query(tree) if count_changes else None
    if mode == "explain":
        lines = [spark_sql] + [f"  input {name}: computed by Puffin from {src}" for name, src, _ in staged]
        return None, "\n".join(lines)
    client = con._spark()
    root, inputs = _stage(con, staged)
    try:
        job = (SparkJob([count, spark_sql], inputs, want_result=want_result, values=(0,)) if count
               else SparkJob([spark_sql], inputs, want_result=want_result))
        return client.run(job, timeout), spark_sql
    finally:
        if root is not None and not root.startswith("s3://"):
            shutil.rmtree(root, ignore_errors=True)


def _staged_tables(con, stmt: exp.Expression) -> list[tuple[str, str, exp.Table]]:
    """Qualify catalog tables in place; every other table (registered, a file) is renamed to a
    temporary view name. Returns (view name, what it was, the table node) for those."""
    ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    staged = []
    for table in list(stmt.find_all(exp.Table)):
        if not isinstance(table.this, (exp.Identifier, exp.Func)):
            continue
        name = table.name.lower()
        if isinstance(table.this, exp.Identifier) and not table.args.get("db") and name in ctes:
            continue
        if isinstance(table.this, exp.Identifier) and _in_catalog(con, table):
            cat, ns, tname = con._catalogs.identify(table)
            table.set("catalog", exp.to_identifier(cat))
            table.set("db", exp.to_identifier(ns))
            table.set("this", exp.to_identifier(tname))
            continue
        view = f"puffin_input_{len(staged)}"
        original = table.copy()
        original.set("alias", None)
        alias = table.alias or (table.name if isinstance(table.this, exp.Identifier) and
                                not table.this.args.get("quoted") else "")
        table.set("this", exp.to_identifier(view))
        table.set("db", None)
        table.set("catalog", None)
        if alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        staged.append((view, original.sql("duckdb"), original))
    return staged


def _in_catalog(con, table: exp.Table) -> bool:
    if table.args.get("db"):
        return True
    if table.this.args.get("quoted") and ("/" in table.name or "." in table.name):
        return False  # a file path
    if table.name.lower() in con._tables:
        return False
    if con._catalogs.namespace:
        return True
    raise BindError(f"unknown table {table.name}; registered: {', '.join(sorted(con._tables)) or '(none)'}, "
                    "or name an Iceberg table as catalog.namespace.table")


def _stage(con, staged):
    """Each non-catalog input computed by Puffin and written as Parquet where Spark can read it."""
    from puffin.spark.client import SparkInput

    if not staged:
        return None, []
    settings = con._spark_settings()
    if settings.mode == "local":
        root = tempfile.mkdtemp(prefix="puffin-spark-inputs-")
    else:
        root = f"{settings.staging.rstrip('/')}/inputs/{uuid.uuid4().hex[:12]}"
    inputs = []
    for view, _, original in staged:
        path = f"{root}/{view}/" if root.startswith("s3://") else os.path.join(root, view) + "/"
        select = exp.select("*").from_(original)
        copy = exp.Copy(this=exp.Subquery(this=select), kind=False, files=[exp.Literal.string(path)],
                        params=[exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var("parquet"))])
        con.sql(copy.sql("duckdb"), cache=False)
        inputs.append(SparkInput(view, path.rstrip("/"), "parquet"))
    return root, inputs


def _text(text: str) -> Result:
    return Result(pa.table({"explain": [text]}), text=text)

"""Write statements: what ``Connection.sql`` does with COPY, CREATE TABLE, INSERT, MERGE, UPDATE, DELETE.

``statement.classify`` picks the writer; the rows a file or append write stores come from a
query planned and run like any other, whose last stage's tasks write instead of returning
(``operators/sink.py``), each its own share, in parallel:

- ``files.FileTarget``: COPY ... TO / CREATE TABLE on a path, staged then published at once;
- ``tables.TableTarget``: INSERT INTO / CREATE TABLE AS an Iceberg table, one commit;
- ``spark.run``: MERGE, UPDATE, DELETE, INSERT OVERWRITE, CREATE OR REPLACE on Spark SQL;
- ``spark.call``: CALL of Iceberg's procedures (table maintenance) on Spark, rows as Spark gives.

Every check that can fail (target not empty, columns or types that do not fit, a table that
exists or does not, credentials that cannot write) runs before any task does, and a failure
after that leaves no file visible. The result is one row: ``rows_written`` (and ``snapshot_id``
for Iceberg, ``files`` and ``path`` for files).
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from puffin.errors import BindError, NotSupportedError, PuffinError
from puffin.planner.parse import parse_statement, retry_deep
from puffin.result import Result
from puffin.writes.statement import FileWrite, SparkWrite, TableWrite, classify, parse_call


def run_write(con, text: str, dialect: str, mode: str | None, timeout: float | None, entry: dict,
              progress=None) -> Result:
    if mode == "analyze":
        raise NotSupportedError("EXPLAIN ANALYZE of a write statement (EXPLAIN shows its plan; run it to write)")
    call = parse_call(text)
    if call is not None:
        from puffin.writes import spark

        entry["write"] = type(call).__name__
        return spark.call(con, call, mode, timeout, entry)
    write = classify(retry_deep(lambda: parse_statement(text, dialect)))
    entry["write"] = type(write).__name__
    if not isinstance(write, FileWrite) and not _in_catalog(con, write):
        if not (isinstance(write, TableWrite) and write.op == "ctas"):
            raise BindError(f"unknown table {write.table.name}: name an Iceberg table as catalog.namespace.table "
                            "(or set connect(default_namespace=...)); registered: "
                            f"{', '.join(sorted(con._tables)) or '(none)'}")
        return _session_table(con, write, mode, timeout, entry)  # CREATE TABLE t AS: a table of this session
    if isinstance(write, SparkWrite):
        from puffin.writes import spark

        return spark.run(con, write, dialect, mode, timeout, entry)
    if isinstance(write, TableWrite) and write.op == "create":
        from puffin.writes import tables

        if mode == "explain":
            return _explain_text(f"CREATE TABLE {write.table.sql('duckdb')} (pyiceberg, no data)")
        return _done(tables.create(write, con._catalogs), entry)
    return _write_rows(con, write, mode, timeout, entry, progress)


def _in_catalog(con, write: TableWrite | SparkWrite) -> bool:
    """Whether the statement's target is an Iceberg table; a registered one is read-only."""
    table = write.table
    name = table.name.lower()
    if table.args.get("db") or table.args.get("catalog"):
        return True
    if name in con._tables:
        if isinstance(write, TableWrite) and write.op == "ctas":
            if write.if_not_exists:
                return False
            raise PuffinError(f"table {name} already exists (registered); unregister it first")
        raise NotSupportedError(f"{write.op.upper()} of registered table {name}: registered tables and files "
                                "are read-only; write to an Iceberg table (catalog.namespace.table) or COPY to a path")
    return bool(con._catalogs.namespace)


def _session_table(con, write: TableWrite, mode: str | None, timeout: float | None, entry: dict) -> Result:
    """``CREATE TABLE t AS SELECT ...`` with no catalog: the rows become a table of this session,
    as in DuckDB (registered in memory; gone with the connection)."""
    name = write.table.name.lower()
    if write.if_not_exists and name in con._tables:
        return _done(pa.table({"rows_written": pa.array([0], pa.int64())}), entry)
    if mode == "explain":
        return con.sql("EXPLAIN " + write.query.sql("duckdb"))
    rows = con.sql(write.query.sql("duckdb"), timeout=timeout, cache=False).arrow()
    con.register(name, rows)
    return _done(pa.table({"rows_written": pa.array([rows.num_rows], pa.int64())}), entry)


def _write_rows(con, write: FileWrite | TableWrite, mode: str | None, timeout: float | None, entry: dict,
                progress=None) -> Result:
    """Plan the query, prepare the target, let the last stage's tasks write, then publish."""
    from puffin.planner.explain import explain

    query = write.query.sql("duckdb")
    gather = isinstance(write, FileWrite) and write.single  # one file: one task writes it
    local = not con._remote()
    before_ray = local and not con._ray_running()
    cpus, mem, nodes = con._cluster_shape(before_ray)
    planned = con._plan(query, "duckdb", cpus, mem, nodes, gather)
    last = planned.plan.stages[-1]
    names = list(planned.plan.names) if planned.plan.names is not None else None
    if isinstance(write, FileWrite):
        from puffin.writes.files import FileTarget

        target = FileTarget(write, con._s3)
        describe = (f"write: {write.format} {'file' if write.single else 'files'} to {write.path}"
                    + (f", partitioned by {', '.join(write.partition_by)}" if write.partition_by else "")
                    + ", staged, then published at once")
        if mode == "explain":
            return _explain_text(explain(planned.plan.stages, planning_ms=planned.plan.planning_ms) + "\n" + describe)
        target.check()
        sink = target.sink(names)
    else:
        from puffin.writes.tables import TableTarget

        if last.schema is None:
            raise NotSupportedError("writing a PIVOT's rows to an Iceberg table (its columns are known only "
                                    "once it ran); CREATE TABLE with explicit columns first")
        target = TableTarget(write, con._catalogs)
        describe = (f"write: Iceberg data files for {target.full} by each task, then one commit "
                    "(fast append)")
        if mode == "explain":
            return _explain_text(explain(planned.plan.stages, planning_ms=planned.plan.planning_ms) + "\n" + describe)
        sink = target.prepare(last.schema, names or last.schema.names)
        if sink is None:
            return _done(target.skipped(), entry)

    def shape(p):
        """The plan as it runs: the last stage's tasks write with ``sink``."""
        st = p.plan.stages[-1]
        frags = dict(p.fragments)
        frags[st.id] = [dataclasses.replace(f, sink=sink) for f in p.fragments[st.id]]
        return dataclasses.replace(p, plan=dataclasses.replace(p.plan, names=None), fragments=frags)

    try:
        written = con._execute(planned, query, "duckdb", None, timeout, local, before_ray, cpus, entry,
                               shape=shape, gather=gather, progress=progress).arrow()
    except BaseException:
        target.abort()
        raise
    return _done(target.publish(written) if isinstance(write, FileWrite) else target.commit(written), entry)


def _done(table, entry: dict) -> Result:
    entry["rows"] = int(table.column("rows_written")[0].as_py())
    return Result(table)


def _explain_text(text: str) -> Result:
    return Result(pa.table({"explain": [text]}), text=text)

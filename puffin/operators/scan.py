"""Read the scan units of a fragment into one Arrow table (projection applied at read).

Parquet units are row groups, read through pyarrow's dataset fragments (Hive partition
columns filled from the path); CSV and JSON units are whole files; in-memory sources are slices.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from puffin import signals
from puffin.operators.sqltext import ident, literal
from puffin.sources import ScanUnit, _file_format
from puffin.storage import S3Config, s3_filesystem, storage_error


@dataclass(frozen=True)
class ScanRead:
    """What one fragment reads from one source: plain data, picklable and JSON-friendly."""

    name: str  # the table name the fragment's SQL reads
    kind: str  # parquet | csv | json | arrow
    schema: pa.Schema
    columns: tuple[str, ...]
    units: tuple[ScanUnit, ...]
    options: tuple[tuple[str, Any], ...] = ()
    source_id: int = -1  # in-memory sources: which table the runtime passes in
    storage: S3Config | None = field(default=None, repr=False)  # object store; None: local files
    extra: Any = field(default=None, repr=False)  # Iceberg: puffin.iceberg.IcebergRead
    filter: Any = field(default=None, repr=False)  # pyarrow expression implied by the pushed filter

    @property
    def out_schema(self) -> pa.Schema:
        """What the read yields, whatever the files hold: the table's columns and types."""
        return pa.schema([self.schema.field(c).with_nullable(True) for c in self.columns])

    @property
    def native(self) -> bool:
        """DuckDB reads it itself: local Parquet, CSV and JSON (no httpfs here for object stores)."""
        return self.kind in ("parquet", "csv", "json") and self.storage is None


def _partition_expr(schema: pa.Schema, values) -> pc.Expression | None:
    expr = None
    for key, value in values:
        term = pc.field(key) == pa.scalar(value, type=schema.field(key).type)
        expr = term if expr is None else expr & term
    return expr


_TYPES_DB: list[duckdb.DuckDBPyConnection] = []  # one small database a process (12 ms to open)
_TYPES_LOCK = threading.Lock()  # DuckDB refuses a call on a connection busy with another


@functools.lru_cache(maxsize=256)
def sql_types(schema: pa.Schema) -> tuple[str, ...]:
    """DuckDB's names for the types of ``schema`` (as DuckDB would read such Arrow columns)."""
    with _TYPES_LOCK:
        if not _TYPES_DB:
            _TYPES_DB.append(signals.connect())
        con = _TYPES_DB[0].cursor()
    try:
        con.register("__t", schema.empty_table())
        return tuple(r[1] for r in con.execute("DESCRIBE __t").fetchall())
    finally:
        con.close()


def _reader(read: ScanRead, files: list[str], partition_cols: set[str], unify: bool) -> str:
    """DuckDB's table function reading ``files``. Parquet by column name (``union_by_name``), so
    files whose physical types differ still read as one table; CSV and JSON with the table's
    column types given, so every task parses every file the same way."""
    paths = "[" + ", ".join(literal(p) for p in files) + "]"
    if read.kind == "parquet":
        return f"read_parquet({paths}, hive_partitioning=false{', union_by_name=true' if unify else ''})"
    fields = [f for f in read.schema if f.name not in partition_cols]
    types = sql_types(pa.schema(fields))
    columns = "{" + ", ".join(f"{literal(f.name)}: {literal(t)}" for f, t in zip(fields, types)) + "}"
    if read.kind == "json":
        return f"read_json({paths}, columns={columns}, hive_partitioning=false)"
    opts = dict(read.options)
    delim = opts.get("delim") or opts.get("sep") or opts.get("delimiter") or ","
    header = literal(bool(opts.get("header", True)))
    return f"read_csv({paths}, delim={literal(delim)}, header={header}, columns={columns}, hive_partitioning=false)"


def native_sql(read: ScanRead) -> str | None:
    """A DuckDB query reading the units natively (projection and filters pushed into the reader),
    every column cast to the table's type; None when the fragment has no units.

    A Parquet file of which only some row groups belong to this fragment is read with a
    ``file_row_number`` range, which DuckDB turns into row-group skips. Hive partition values
    come from ``partition`` (the same the planner saw); columns a file lacks read as NULL.
    """
    if not read.units:
        return None
    casts = any(u.partition or u.missing or u.retype for u in read.units)
    types = dict(zip(read.columns, sql_types(read.out_schema))) if casts else {}
    by_file: dict[str, list[ScanUnit]] = {}
    for u in read.units:
        by_file.setdefault(u.path, []).append(u)
    partition_cols = {k for u in read.units[:1] for k, _ in u.partition}

    def select(unit: ScanUnit) -> str:
        values = dict(unit.partition)
        cols = []
        for c in read.columns:  # cast only what the file does not hold as the table's type
            if c in partition_cols or c in unit.missing or c in unit.retype:
                value = literal(values.get(c)) if c in partition_cols else "NULL" if c in unit.missing else ident(c)
                cols.append(f"CAST({value} AS {types[c]}) AS {ident(c)}")
            else:
                cols.append(ident(c))
        return ", ".join(cols) if cols else "NULL AS __none"

    parts = []
    whole: dict[tuple, list[str]] = {}  # files read whole, by what the SELECT fills in for them
    first: dict[tuple, ScanUnit] = {}
    for path, units in by_file.items():
        if read.kind != "parquet" or sum(u.rows for u in units) == units[0].file_rows:
            key = (units[0].partition, units[0].missing, units[0].retype, units[0].unify)
            whole.setdefault(key, []).append(path)
            first.setdefault(key, units[0])
            continue
        cond = " OR ".join(f"(file_row_number >= {a} AND file_row_number < {b})" for a, b in _ranges(units))
        parts.append(f"SELECT {select(units[0])} FROM read_parquet({literal(path)}, file_row_number=true, "
                     f"hive_partitioning=false) WHERE {cond}")
    for key, paths in whole.items():
        parts.append(f"SELECT {select(first[key])} FROM {_reader(read, paths, partition_cols, first[key].unify)}")
    return " UNION ALL ".join(parts)


def _ranges(units: list[ScanUnit]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for u in sorted(units, key=lambda u: u.first_row):
        a, b = u.first_row, u.first_row + u.rows
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _read_fragment(frag, schema: pa.Schema, columns: list[str], row_filter) -> pa.Table:
    """Read one file fragment, skipping row groups and rows the filter excludes when pyarrow
    can evaluate it (DuckDB applies the whole filter again, so this only saves work)."""
    if row_filter is not None:
        try:
            return frag.to_table(schema=schema, columns=columns, filter=row_filter)
        except pa.ArrowException:
            pass  # a comparison pyarrow cannot evaluate for this column's type: read unfiltered
    return frag.to_table(schema=schema, columns=columns)


def read_scan(read: ScanRead, table: pa.Table | None = None) -> pa.Table:
    """The fragment's share of the source, as one table of the source's declared schema."""
    out_schema = read.out_schema
    return conform(_read(read, table, out_schema), out_schema)


def conform(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """``table`` (columns by position) with ``schema``'s names and types: a task that read fewer
    or no rows, or files of narrower physical types, yields the same schema as its siblings."""
    if schema is None or table.schema.equals(schema):
        return table
    if table.num_columns != len(schema):
        raise ValueError(f"got columns {table.column_names}, expected {schema.names}")
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(table.columns, schema)], schema=schema)


def _read(read: ScanRead, table: pa.Table | None, out_schema: pa.Schema) -> pa.Table:
    schema = read.schema
    columns = list(read.columns)
    if read.kind == "iceberg":
        from puffin.operators.iceberg_scan import read_iceberg

        return read_iceberg(read.extra, [u.task for u in read.units], columns, out_schema)
    if read.kind == "arrow":
        assert table is not None, "in-memory scan without its table"
        pieces = [table.slice(u.offset, u.length).select(columns) for u in read.units]
        return pa.concat_tables(pieces) if pieces else out_schema.empty_table()
    fmt = _file_format(read.kind, dict(read.options))
    fs = s3_filesystem(read.storage) if read.storage else pafs.LocalFileSystem()
    tables = []
    for unit in read.units:
        kwargs = {}
        if unit.row_groups is not None:
            kwargs["row_groups"] = list(unit.row_groups)
        part = _partition_expr(schema, unit.partition)
        if part is not None:
            kwargs["partition_expression"] = part
        try:
            frag = fmt.make_fragment(unit.path, filesystem=fs, **kwargs)
            tables.append(conform(_read_fragment(frag, schema, columns, read.filter).select(columns), out_schema))
        except OSError as e:
            if read.storage is None:
                raise
            raise storage_error(e, f"s3://{unit.path}", read.storage) from None
    if not tables:
        return out_schema.empty_table()
    return pa.concat_tables(tables)


__all__ = ["ScanRead", "conform", "native_sql", "read_scan"]

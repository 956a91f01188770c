"""Appends to Iceberg tables, the fast path: Puffin's tasks write the data files, one commit adds them.

``INSERT INTO cat.ns.t <query>`` and ``CREATE TABLE cat.ns.t AS <query>``: the query is planned
and run like any other, and its last stage's tasks write Iceberg data files (``IcebergSink``:
pyiceberg's writer, the table's partition spec, column statistics) into the table's location.
No reader sees a data file until a snapshot references it, so a task or driver that dies midway
leaves the table as it was. Then the driver commits them all in one fast-append snapshot:

- a conflict (another writer committed first) refreshes the table and commits again, on top of
  the new snapshot (an append's files never need rewriting), up to ``COMMIT_ATTEMPTS`` times;
- an unknown commit state (the catalog may or may not have taken it) keeps the files: deleting
  them could corrupt a committed snapshot. Any other failure deletes this write's files.

``CREATE TABLE ... AS`` creates the table in the same commit (pyiceberg's create-table
transaction): until it succeeds, the table does not exist. ``CREATE TABLE cat.ns.t (cols)``
creates an empty table. Each statement returns the rows written and the new snapshot's id.
"""

from __future__ import annotations

import pickle
import random
import time
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
from sqlglot import exp

from puffin import signals
from puffin.errors import BindError, PuffinError
from puffin.operators.sink import IcebergSink
from puffin.writes.statement import TableWrite

COMMIT_ATTEMPTS = 8
WRITE_ID = "puffin.write-id"  # snapshot summary property: which snapshot this write made


def _iceberg_types(schema: pa.Schema, names: list[str]) -> pa.Schema:
    """The query's columns as types an Iceberg table can hold (views become plain strings)."""
    fields = []
    for name, f in zip(names, schema):
        t = _plain(f.type)
        if pa.types.is_unsigned_integer(t):
            raise PuffinError(f"column {name}: Iceberg has no unsigned integers; CAST it to a signed type")
        if pa.types.is_null(t):
            raise PuffinError(f"column {name} is an untyped NULL; CAST it to the column's type")
        fields.append(pa.field(name, t))
    return pa.schema(fields)


def _plain(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_timestamp(t) and t.unit == "ns":
        return pa.timestamp("us", t.tz)
    return t


def assignable(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether an INSERT stores a value of ``src`` in a column of ``dst`` (ANSI store
    assignment, as Spark and Trino: numbers to numbers, text to text, dates and times to their
    kinds; an overflow fails the write when it happens). NULL goes anywhere."""
    src, dst = _plain(src), _plain(dst)
    if pa.types.is_null(src) or src == dst:
        return True
    kinds = [
        lambda t: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t),
        lambda t: pa.types.is_string(t),
        lambda t: pa.types.is_binary(t) or pa.types.is_fixed_size_binary(t),
        pa.types.is_boolean,
        lambda t: pa.types.is_date(t) or pa.types.is_timestamp(t),
        pa.types.is_time,
        pa.types.is_struct,
        lambda t: pa.types.is_list(t) or pa.types.is_large_list(t),
        pa.types.is_map,
    ]
    return any(k(src) and k(dst) for k in kinds)


class TableTarget:
    """One INSERT or CREATE TABLE AS into an Iceberg table: checked, written, committed."""

    def __init__(self, write: TableWrite, catalogs):
        self.write = write
        self.catalog_name, self.namespace, self.name = catalogs.identify(write.table)
        self.full = f"{self.catalog_name}.{self.namespace}.{self.name}"
        self.catalog = catalogs.catalog(self.catalog_name)
        self.write_id = uuid.uuid4()
        self.table = None  # the pyiceberg Table (insert)
        self.tx = None  # the create-table transaction (CREATE TABLE AS)
        self.skip = False  # CREATE TABLE IF NOT EXISTS of a table that exists: nothing to do

    def prepare(self, schema: pa.Schema, names: list[str]) -> IcebergSink | None:
        """Check the query's columns against the table (or make the table's schema from them)
        before any task runs; the sink the last stage's tasks write with."""
        if self.write.op == "ctas":
            if self.catalog.table_exists((self.namespace, self.name)):
                if self.write.if_not_exists:
                    self.skip = True
                    return None
                raise PuffinError(f"Iceberg table {self.full} already exists; INSERT INTO it, or "
                                  "CREATE OR REPLACE TABLE to overwrite it")
            self._namespace_exists()
            self.tx = self.catalog.create_table_transaction((self.namespace, self.name),
                                                            schema=_iceberg_types(schema, names))
            metadata = self.tx.table_metadata
            return IcebergSink(metadata, self._io(metadata), self.write_id)
        self.table = self._load()
        columns = self._columns(schema, names)
        return IcebergSink(self.table.metadata, dict(self.table.io.properties), self.write_id, columns)

    def _io(self, metadata) -> dict:
        return {**self.catalog.properties, **metadata.properties}

    def _namespace_exists(self) -> None:
        if (self.namespace,) not in [tuple(n) for n in self.catalog.list_namespaces()]:
            raise BindError(f"namespace {self.catalog_name}.{self.namespace} does not exist; namespaces: "
                            + (", ".join(".".join(n) for n in self.catalog.list_namespaces()) or "(none)"))

    def _load(self):
        from puffin.iceberg import load_error

        try:
            return self.catalog.load_table((self.namespace, self.name))
        except Exception as e:  # noqa: BLE001 - NoSuchTableError, NoSuchNamespaceError, OSError
            raise load_error(e, self.full, self.catalog, self.namespace) from None

    def _columns(self, schema: pa.Schema, names: list[str]) -> tuple[str, ...]:
        """The table's columns the query's columns go to, in the query's order; every column
        checked for fit (count, names, types)."""
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        target = schema_to_pyarrow(self.table.schema(), include_field_ids=False)
        have = target.names
        w = self.write
        if w.by_name:
            columns = tuple(names)
        elif w.columns:
            columns = w.columns
        else:
            columns = tuple(have)
        unknown = [c for c in columns if c not in have]
        if unknown:
            raise BindError(f"INSERT into {self.full}: no column {', '.join(unknown)}; columns: {', '.join(have)}")
        if len(set(columns)) < len(columns):
            raise BindError(f"INSERT into {self.full}: a column is named twice in {', '.join(columns)}")
        if len(columns) != len(schema):
            raise PuffinError(f"INSERT into {self.full}: the query gives {len(schema)} columns, "
                              f"{len(columns)} are expected ({', '.join(columns)})")
        for col, f in zip(columns, schema):
            dst = target.field(col)
            if not assignable(f.type, dst.type):
                raise PuffinError(f"INSERT into {self.full}: column {col} is {dst.type}; "
                                  f"the query gives {f.type} for it")
        for f in target:
            if f.name not in columns and not f.nullable:
                raise PuffinError(f"INSERT into {self.full}: column {f.name} is NOT NULL and gets no value")
        return columns

    # -- after the tasks -------------------------------------------------------------------------
    def commit(self, written: pa.Table) -> pa.Table:
        from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException

        files = [pickle.loads(b) for b in written.column("data_file").to_pylist()]
        rows = sum(written.column("rows").to_pylist())
        props = {WRITE_ID: str(self.write_id)}
        try:
            if self.tx is not None:  # CREATE TABLE AS: the table and its first snapshot at once
                with self.tx.update_snapshot(snapshot_properties=props).fast_append() as append:
                    for f in files:
                        append.append_data_file(f)
                self.tx.commit_transaction()
                table = self.catalog.load_table((self.namespace, self.name))
            else:
                table = self._append(files, props)
        except CommitStateUnknownException as e:
            raise PuffinError(f"the commit to {self.full} may or may not have happened ({e}); its data "
                              "files were kept: check the table's snapshots before writing again") from None
        except CommitFailedException as e:
            self.abort()
            raise PuffinError(f"the commit to {self.full} failed: {e}") from None
        except Exception:
            self.abort()
            raise
        snap = next((s for s in reversed(table.metadata.snapshots)
                     if (s.summary or {}).get(WRITE_ID) == str(self.write_id)), None)
        return _result(rows, snap.snapshot_id if snap is not None else None)

    def _append(self, files, props):
        from pyiceberg.exceptions import CommitFailedException

        table = self.table
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                with table.transaction() as tx, tx.update_snapshot(snapshot_properties=props).fast_append() as append:
                    for f in files:
                        append.append_data_file(f)
                return table
            except CommitFailedException:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
                table = table.refresh()  # the other writer's snapshot; ours goes on top of it
        return table

    def abort(self) -> None:
        """Delete this write's data files (named with its write id); none is referenced."""
        metadata = self.tx.table_metadata if self.tx is not None else self.table.metadata if self.table else None
        if metadata is None:
            return
        from pyiceberg.io.pyarrow import PyArrowFileIO

        io = PyArrowFileIO(self._io(metadata))
        base = f"{metadata.location.rstrip('/')}/data"
        try:
            scheme, netloc, path = io.parse_location(base)
            fs = io.fs_by_scheme(scheme, netloc)
            for info in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
                if info.type == pafs.FileType.File and str(self.write_id) in info.base_name:
                    fs.delete_file(info.path)
        except Exception:  # noqa: BLE001, S110 - leftovers are unreferenced; the error that matters is raised
            pass

    def skipped(self) -> pa.Table:
        return _result(0, None)


def _result(rows: int, snapshot_id: int | None) -> pa.Table:
    return pa.table({"rows_written": pa.array([rows], pa.int64()), "snapshot_id": pa.array([snapshot_id], pa.int64())})


def create(write: TableWrite, catalogs) -> pa.Table:
    """CREATE TABLE cat.ns.t (col type, ...): an empty table, column types as DuckDB reads them."""
    import duckdb

    target = TableTarget(write, catalogs)
    if target.catalog.table_exists((target.namespace, target.name)):
        if write.if_not_exists:
            return _result(0, None)
        raise PuffinError(f"Iceberg table {target.full} already exists")
    target._namespace_exists()
    cols = []
    for c in write.schema.expressions:
        kind = c.args.get("kind")
        if kind is None:
            raise PuffinError(f"column {c.name} of {target.full} needs a type")
        cols.append(f"CAST(NULL AS {kind.sql('duckdb')}) AS \"{c.name}\"")
    try:
        arrow = signals.connect().sql(f"SELECT {', '.join(cols)} LIMIT 0").to_arrow_table().schema
    except duckdb.Error as e:
        raise PuffinError(f"CREATE TABLE {target.full}: {str(e).splitlines()[0]}") from None
    schema = _iceberg_types(arrow, arrow.names)
    required = {c.name for c in write.schema.expressions
                if any(isinstance(x.args.get("kind"), exp.NotNullColumnConstraint) for x in c.args.get("constraints") or [])}
    schema = pa.schema([f.with_nullable(f.name not in required) for f in schema])
    table = target.catalog.create_table((target.namespace, target.name), schema=schema)
    return _result(0, table.metadata.current_snapshot_id)

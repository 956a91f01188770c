"""Where a writing stage's tasks put their rows instead of returning them.

``FileSink`` (COPY ... TO and CREATE TABLE on a path): DuckDB writes the task's share with its
own COPY into this query's staging directory (a hidden ``_puffin_staging-<id>`` beside or
inside the target: readers skip names starting with ``_`` or ``.``); files for an object store
are written to local disk first and uploaded. ``IcebergSink`` (INSERT INTO and CREATE TABLE in
a catalog): the rows are cast to the table's schema and written as Iceberg data files by
pyiceberg's writer (partitioned by the table's spec, with column statistics) under the table's
data location; nothing references them until the driver commits (``puffin.writes.iceberg``).

Either returns a small table describing what it wrote, the stage's only output. Like the rest
of ``puffin.operators``, this imports neither Ray nor boto3.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from puffin.operators.sqltext import literal
from puffin.storage import S3Config, is_s3, s3_filesystem, strip_scheme

FILES_SCHEMA = pa.schema([("file", pa.string()), ("bytes", pa.int64()), ("rows", pa.int64())])
ICEBERG_SCHEMA = pa.schema([("data_file", pa.binary()), ("rows", pa.int64())])
EXTENSIONS = {"parquet": "parquet", "csv": "csv", "json": "json"}
FILES_PER_TASK = 1_000_000  # Iceberg file name counters: task i numbers its files from i * this


class WriteError(Exception):
    """A task could not write its rows (the fragment reports it as the stage's failure)."""


@dataclass(frozen=True)
class FileSink:
    staging: str  # the query's staging directory (local path or s3:// URL)
    format: str  # parquet | csv | json
    options: tuple[tuple[str, str], ...] = ()  # further COPY options: (NAME, value as SQL)
    partition_by: tuple[str, ...] = ()
    single: bool = False  # one file (written by the one task) instead of a directory
    names: tuple[str, ...] = ()  # the columns' names in the files (the stage's are internal)
    s3: S3Config | None = field(default=None, repr=False)

    def write(self, cur, sql: str, task: int) -> pa.Table:
        remote = is_s3(self.staging)
        local = tempfile.mkdtemp(prefix="puffin-write-") if remote else self.staging
        try:
            os.makedirs(local, exist_ok=True)
            name = f"part-{task:05d}-{uuid.uuid4().hex[:12]}"
            target = os.path.join(local, f"{name}.{EXTENSIONS[self.format]}")
            opts = [f"FORMAT {self.format}", *(f"{k} {v}" for k, v in self.options)]
            if self.partition_by:
                target = local
                cols = ", ".join(_quote(c) for c in self.partition_by)
                opts += [f"PARTITION_BY ({cols})", f"FILENAME_PATTERN {literal(name + '-{i}')}",
                         "OVERWRITE_OR_IGNORE true"]  # tasks share the directory; names never collide
            if self.names:
                sql = f"SELECT * FROM ({sql}) AS _q({', '.join(_quote(n) for n in self.names)})"
            rows = cur.execute(f"COPY ({sql}) TO {literal(target)} ({', '.join(opts)})").fetchone()[0]
            files = _written(local, name)
            if remote:
                _upload(local, files, self.staging, self.s3)
            return pa.table({"file": [f for f, _ in files] + [None], "bytes": [b for _, b in files] + [0],
                             "rows": [None] * len(files) + [int(rows)]}, schema=FILES_SCHEMA)
        finally:
            if remote:
                shutil.rmtree(local, ignore_errors=True)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _written(root: str, name: str) -> list[tuple[str, int]]:
    """The files this task wrote (relative paths under ``root``) and their sizes."""
    out = []
    for d, _, names in os.walk(root):
        for f in names:
            if f.startswith(name):
                path = os.path.join(d, f)
                out.append((os.path.relpath(path, root), os.path.getsize(path)))
    return sorted(out)


def _upload(local: str, files: list[tuple[str, int]], staging: str, s3: S3Config | None) -> None:
    fs = s3_filesystem(s3 or S3Config.resolve())
    base = strip_scheme(staging).rstrip("/")
    for rel, _ in files:
        with open(os.path.join(local, rel), "rb") as src, fs.open_output_stream(f"{base}/{rel}") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)


@dataclass(frozen=True)
class IcebergSink:
    metadata: Any = field(repr=False)  # pyiceberg TableMetadata the rows are written for
    io_properties: dict = field(repr=False)
    write_uuid: uuid.UUID = field(default_factory=uuid.uuid4)
    columns: tuple[str, ...] = ()  # the table's columns the query's columns go to, in order

    def write(self, cur, sql: str, task: int) -> pa.Table:
        from pyiceberg.io import load_file_io
        from pyiceberg.io.pyarrow import _dataframe_to_data_files, schema_to_pyarrow

        rows = cur.sql(sql).to_arrow_table()
        target = schema_to_pyarrow(self.metadata.schema(), include_field_ids=False)
        rows = _fit(rows, target, self.columns)
        if rows.num_rows == 0:
            return pa.table({"data_file": [], "rows": []}, schema=ICEBERG_SCHEMA)
        io = load_file_io(self.io_properties, self.metadata.location)
        # pyiceberg's own writer (what Table.append uses): partition split, stats, field ids
        files = list(_dataframe_to_data_files(table_metadata=self.metadata, df=rows, io=io,
                                              write_uuid=self.write_uuid,
                                              counter=itertools.count(task * FILES_PER_TASK)))
        return pa.table({"data_file": [pickle.dumps(f) for f in files], "rows": [f.record_count for f in files]},
                        schema=ICEBERG_SCHEMA)


def _fit(rows: pa.Table, target: pa.Schema, columns: tuple[str, ...]) -> pa.Table:
    """The query's rows as the table's columns: by position onto ``columns`` (the statement's
    column list, or all of the table's), absent columns null, every value cast to the table's
    type (an overflow fails the write). A NULL in a required column fails it too."""
    by_name = dict(zip(columns or target.names, rows.columns))
    out = []
    for f in target:
        col = by_name.get(f.name)
        if col is None:
            col = pa.nulls(rows.num_rows, f.type)
        else:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise WriteError(f"column {f.name}: cannot store the value as {f.type}: {e}") from None
        if not f.nullable and col.null_count:
            raise WriteError(f"column {f.name} is NOT NULL but {col.null_count} rows have NULL")
        out.append(col)
    return pa.table(out, schema=target)

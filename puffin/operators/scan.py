"""Read the scan units of a fragment into one Arrow table (projection applied at read).

Parquet units are row groups, read through pyarrow's dataset fragments (Hive partition
columns filled from the path); CSV and JSON units are whole files; in-memory sources are slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from puffin.sources import ScanUnit, _file_format


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


def _partition_expr(schema: pa.Schema, values) -> pc.Expression | None:
    expr = None
    for key, value in values:
        term = pc.field(key) == pa.scalar(value, type=schema.field(key).type)
        expr = term if expr is None else expr & term
    return expr


def read_scan(read: ScanRead, table: pa.Table | None = None) -> pa.Table:
    schema = read.schema
    columns = list(read.columns)
    out_schema = pa.schema([schema.field(c) for c in columns])
    if read.kind == "arrow":
        assert table is not None, "in-memory scan without its table"
        pieces = [table.slice(u.offset, u.length).select(columns) for u in read.units]
        return pa.concat_tables(pieces) if pieces else out_schema.empty_table()
    fmt = _file_format(read.kind, dict(read.options))
    fs = pafs.LocalFileSystem()
    tables = []
    for unit in read.units:
        kwargs = {}
        if unit.row_groups is not None:
            kwargs["row_groups"] = list(unit.row_groups)
        part = _partition_expr(schema, unit.partition)
        if part is not None:
            kwargs["partition_expression"] = part
        frag = fmt.make_fragment(unit.path, filesystem=fs, **kwargs)
        tables.append(frag.to_table(schema=schema, columns=columns))
    if not tables:
        return out_schema.empty_table()
    return pa.concat_tables(tables)


__all__ = ["ScanRead", "read_scan"]

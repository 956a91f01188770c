"""Read Iceberg file scan tasks with pyiceberg's Arrow reader.

pyiceberg resolves columns by field id (renamed, added and dropped columns read right in old
files), fills identity-partition values and applies positional delete files; DuckDB then runs
the fragment over the result. Equality deletes are refused at planning (``puffin.iceberg``).
"""

from __future__ import annotations

import pyarrow as pa


def read_iceberg(read, tasks: list, columns: list[str], out_schema: pa.Schema) -> pa.Table:
    if not tasks:
        return out_schema.empty_table()
    from pyiceberg.io import load_file_io
    from pyiceberg.io.pyarrow import ArrowScan

    io = load_file_io(read.io_properties, read.metadata.location)
    projected = read.projected_schema.select(*columns) if columns else read.projected_schema
    table = ArrowScan(read.metadata, io, projected, read.row_filter).to_table(tasks)
    return table.select(columns).cast(out_schema)

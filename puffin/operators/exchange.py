"""Split a fragment's output into hash partitions.

Keys are hashed by DuckDB after casting to a canonical type per family (numbers to DOUBLE,
dates and timestamps to TIMESTAMP, TIME and INTERVAL as they are, anything else to VARCHAR),
so equal join keys of different widths (INTEGER vs BIGINT, DECIMAL(12,2) vs DECIMAL(15,2))
land in the same partition on both sides.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from puffin.operators.sqltext import ident


def _canonical(name: str, t: pa.DataType) -> str:
    quoted = ident(name)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return f"CAST({quoted} AS DOUBLE)"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return f"CAST({quoted} AS TIMESTAMP)"
    if pa.types.is_temporal(t) or pa.types.is_interval(t):  # TIME, INTERVAL: hashed as they are
        return quoted
    return f"CAST({quoted} AS VARCHAR)"


def hash_partition(con, table: pa.Table, keys: tuple[str, ...], n: int) -> list[pa.Table]:
    """Partition ``table`` into ``n`` tables by the hash of ``keys`` (``con``: a DuckDB cursor)."""
    if n == 1:
        return [table]
    if table.num_rows == 0:
        return [table] * n
    exprs = ", ".join(_canonical(k, table.schema.field(k).type) for k in keys)
    con.register("__part_in", table)
    try:
        pid = con.sql(f"SELECT (hash({exprs}) % {n})::INTEGER AS p FROM __part_in").fetchnumpy()["p"]
    finally:
        con.unregister("__part_in")
    return split_by(table, np.asarray(pid), n)


def split_by(table: pa.Table, pid: np.ndarray, n: int) -> list[pa.Table]:
    """Rows with partition id i go to table i, keeping their relative order."""
    pid = pid.astype(np.uint16 if n <= 65535 else np.uint32)
    order = np.argsort(pid, kind="stable")  # radix sort for 16-bit keys: linear time
    counts = np.bincount(pid, minlength=n)
    sorted_table = table.take(pa.array(order))
    out, start = [], 0
    for c in counts:
        out.append(sorted_table.slice(start, int(c)))
        start += int(c)
    return out


def range_partition(table: pa.Table, pid_column: str, n: int) -> list[pa.Table]:
    """Split by a partition-id column the fragment computed (range partitioning) and drop it."""
    pid = table.column(pid_column).to_numpy(zero_copy_only=False)
    return split_by(table.drop_columns([pid_column]), pid, n)


def sample(table: pa.Table, column: str, size: int = 256) -> pa.Table:
    """Evenly spaced values of ``column`` (deterministic, so a retried task samples the same)."""
    if table.num_rows <= size:
        return table.select([column])
    idx = np.linspace(0, table.num_rows - 1, size).astype(np.int64)
    return table.select([column]).take(pa.array(idx))

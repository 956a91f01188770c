"""Answer checking against DuckDB, in the spirit of DuckDB's own TPC-H answer comparison.

Columns are matched by position (engines name them differently), values after
normalisation: decimals and integers as floats, dates and midnight timestamps as ISO dates.
Numbers pass when |actual - expected| <= 1% of |expected| + 1e-8, anything else must be
equal. Row order is checked only when the query's outermost SELECT has an ORDER BY;
otherwise both sides are sorted first.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math

import pyarrow as pa
import sqlglot
from sqlglot import exp

REL_TOL = 0.01
ABS_TOL = 1e-8


@functools.cache
def has_order_by(sql: str) -> bool:
    tree = sqlglot.parse_one(sql, read="duckdb")
    return isinstance(tree, exp.Query) and tree.args.get("order") is not None


def _normalise(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _rows(table: pa.Table) -> list[tuple]:
    columns = [[_normalise(v) for v in col.to_pylist()] for col in table.columns]
    return list(zip(*columns))


def _sort_key(row: tuple) -> tuple:
    return tuple((0, "") if v is None else (1, v) if isinstance(v, float) else (2, str(v)) for v in row)


def _same(actual, expected) -> bool:
    if isinstance(actual, float) and isinstance(expected, float):
        if math.isnan(actual) or math.isnan(expected):
            return math.isnan(actual) and math.isnan(expected)
        return abs(actual - expected) <= REL_TOL * abs(expected) + ABS_TOL
    return actual == expected


def compare(actual: pa.Table, expected: pa.Table, ordered: bool) -> str | None:
    """None when ``actual`` matches ``expected``, else a short description of the first
    difference."""
    if actual.num_columns != expected.num_columns:
        return f"{actual.num_columns} columns, expected {expected.num_columns}"
    if actual.num_rows != expected.num_rows:
        return f"{actual.num_rows} rows, expected {expected.num_rows}"
    got, want = _rows(actual), _rows(expected)
    if not ordered:
        got, want = sorted(got, key=_sort_key), sorted(want, key=_sort_key)
    for i, (g, w) in enumerate(zip(got, want)):
        for j, (a, e) in enumerate(zip(g, w)):
            if not _same(a, e):
                name = expected.column_names[j]
                return f"row {i} column {name!r}: got {a!r}, expected {e!r}"
    return None

"""Result comparison with DuckDB as the oracle, shared by the tests, scripts/tpch_check.py and
the benchmark harness, in the spirit of DuckDB's own TPC-H answer check.

Values are compared after normalisation (decimals and integers as floats, dates and midnight
timestamps as ISO dates): numbers pass when |actual - expected| <= 1% of |expected| + 1e-8,
anything else must be equal. Row order counts only when the query's outermost SELECT orders;
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
    """Does the outermost query order its rows (not just a window or a subquery)?"""
    tree = sqlglot.parse_one(sql, read="duckdb")
    return isinstance(tree, exp.Query) and tree.args.get("order") is not None


def _normalise(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        return float(value)
    if isinstance(value, dt.datetime):
        value = value.replace(tzinfo=None)
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


def compare(actual: pa.Table, expected: pa.Table, ordered: bool, check_names: bool = False) -> str | None:
    """None when ``actual`` matches ``expected``, else the first difference. Columns match by
    position (engines name unaliased expressions differently) unless ``check_names``."""
    if check_names and actual.column_names != expected.column_names:
        return f"columns {actual.column_names}, expected {expected.column_names}"
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
                return f"row {i} column {expected.column_names[j]!r}: got {a!r}, expected {e!r}\n got {g}\nwant {w}"
    return None


def assert_same_result(actual: pa.Table, expected: pa.Table, ordered: bool, label: str = "") -> None:
    """Assert equal results, column names included (Puffin names columns as DuckDB does)."""
    problem = compare(actual, expected, ordered, check_names=True)
    assert problem is None, f"{label}: {problem}"

"""Result comparison with DuckDB as the oracle, shared by the tests, scripts/tpch_check.py and
the benchmark harness.

Values are compared exactly, except floating-point ones:

- integers and decimals compare as exact numbers (``Decimal('1.50') == 1.5`` exactly, never
  through a float); dates, times, timestamps, intervals, strings and booleans must be equal;
- floats pass when ``|actual - expected| <= REL_TOL * |expected| + ABS_TOL``; NaN equals NaN;
- lists, structs and maps compare element by element with the same rules;
- a float against an exact number (only possible when types are not checked, e.g. another
  engine's double against DuckDB's decimal) also allows one unit in the exact side's last place.

Row order counts only when the query's outermost SELECT orders; otherwise both sides are sorted
first. When the ORDER BY keys are output columns (``order_keys``), rows that tie on every key may
come in any order. ``assert_same_result`` also checks column names and Arrow types (DuckDB's
``to_arrow_table()`` schema is the reference: string, large_string and string_view differ).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math

import pyarrow as pa
import sqlglot
from sqlglot import exp

REL_TOL = 1e-9
ABS_TOL = 1e-12
MIXED_REL_TOL = 1e-6  # a float against an exact number of another engine (types not checked)

_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())


@functools.cache
def has_order_by(sql: str) -> bool:
    """Does the outermost query order its rows (not just a window or a subquery)?"""
    tree = sqlglot.parse_one(sql, read="duckdb")
    return isinstance(tree, exp.Query) and tree.args.get("order") is not None


@functools.cache
def _order_exprs(sql: str) -> tuple[tuple[exp.Expression, ...], tuple[exp.Expression, ...]] | None:
    tree = sqlglot.parse_one(sql, read="duckdb")
    order = tree.args.get("order") if isinstance(tree, exp.Query) else None
    if order is None:
        return None
    selects = tuple(tree.selects) if isinstance(tree, exp.Select) else ()
    return tuple(o.this for o in order.expressions), selects


def order_keys(sql: str, names: list[str]) -> list[int] | None:
    """Positions of the result columns the outermost ORDER BY sorts on, or None when some key is
    not an output column (then the whole row order is compared). ``names``: the result's columns."""
    parsed = _order_exprs(sql)
    if parsed is None:
        return None
    keys, selects = parsed
    out = []
    for key in keys:
        if isinstance(key, exp.Literal) and key.is_int:
            out.append(int(key.this) - 1)
            continue
        pos = None
        if isinstance(key, exp.Column) and not key.table:
            matches = [i for i, n in enumerate(names) if n == key.name]
            pos = matches[0] if len(matches) == 1 else None
        if pos is None:
            same = [i for i, s in enumerate(selects) if s.unalias() == key]
            pos = same[0] if len(same) == 1 and len(selects) == len(names) else None
        if pos is None:
            return None
        out.append(pos)
    return out if all(0 <= p < len(names) for p in out) else None


# -- values -------------------------------------------------------------------------------------
def _is_exact(v) -> bool:
    return isinstance(v, (int, decimal.Decimal)) and not isinstance(v, bool)


def _ulp(v) -> float:
    """One unit in the last place of an exact number (its decimal scale)."""
    if isinstance(v, decimal.Decimal) and v.is_finite():
        return 10.0 ** v.as_tuple().exponent
    return 1.0 if isinstance(v, int) else 0.0


def _same(actual, expected) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, float) or isinstance(expected, float):
        if not isinstance(actual, (float, int, decimal.Decimal)) or not isinstance(expected, (float, int, decimal.Decimal)):
            return False
        a, e = float(actual), float(expected)
        if math.isnan(a) or math.isnan(e):
            return math.isnan(a) and math.isnan(e)
        if math.isinf(a) or math.isinf(e):
            return a == e
        if isinstance(actual, float) and isinstance(expected, float):
            return abs(a - e) <= REL_TOL * abs(e) + ABS_TOL
        exact = expected if _is_exact(expected) else actual
        return abs(a - e) <= MIXED_REL_TOL * abs(e) + _ulp(exact) + ABS_TOL
    if _is_exact(actual) and _is_exact(expected):
        return actual == expected  # int and Decimal compare exactly
    if isinstance(actual, dt.datetime) != isinstance(expected, dt.datetime) and all(
        isinstance(v, dt.date) for v in (actual, expected)
    ):  # a date against a midnight timestamp (only when types are not checked)
        stamp, day = (actual, expected) if isinstance(actual, dt.datetime) else (expected, actual)
        return stamp.tzinfo is None and stamp.time() == dt.time() and stamp.date() == day
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(_same(actual[k], expected[k]) for k in expected)
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(_same(a, e) for a, e in zip(actual, expected))
    return type(actual) is type(expected) and actual == expected


def _key(v) -> tuple:
    """A total order over anything a result holds (None first, numbers of any kind together)."""
    if v is None:
        return (0,)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, (int, float, decimal.Decimal)):
        if isinstance(v, float) and math.isnan(v):
            return (2, 1, 0)
        if isinstance(v, decimal.Decimal) and not v.is_finite():
            return (2, 1, 0) if v.is_nan() else (2, 0, float(v))
        return (2, 0, v)  # int, float and Decimal compare exactly with each other
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, bytes):
        return (4, v)
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return (5, v.isoformat())
    if isinstance(v, dt.date):
        return (5, v.isoformat())
    if isinstance(v, dt.time):
        return (6, v.isoformat())
    if isinstance(v, dt.timedelta):
        return (7, v)
    if isinstance(v, dict):
        return (8, tuple((str(k), _key(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return (9, tuple(_key(x) for x in v))
    return (10, type(v).__name__, repr(v))


def _row_key(row: tuple) -> tuple:
    return tuple(_key(v) for v in row)


def _rows(table: pa.Table) -> list[tuple]:
    return list(zip(*(col.to_pylist() for col in table.columns))) if table.num_columns else [()] * table.num_rows


def _same_rows(got: list[tuple], want: list[tuple], names: list[str], offset: int = 0) -> str | None:
    for i, (g, w) in enumerate(zip(got, want)):
        for j, (a, e) in enumerate(zip(g, w)):
            if not _same(a, e):
                return f"row {offset + i} column {names[j]!r}: got {a!r}, expected {e!r}\n got {g}\nwant {w}"
    return None


def _same_unordered(got: list[tuple], want: list[tuple], names: list[str], offset: int = 0) -> str | None:
    return _same_rows(sorted(got, key=_row_key), sorted(want, key=_row_key), names, offset)


def _same_ordered(got: list[tuple], want: list[tuple], names: list[str], keys: list[int] | None) -> str | None:
    if not keys:
        return _same_rows(got, want, names)
    # rows tying on every ORDER BY key form a group that may come in any order
    start = 0
    while start < len(want):
        end = start + 1
        while end < len(want) and all(_same(want[end][k], want[start][k]) for k in keys):
            end += 1
        problem = _same_unordered(got[start:end], want[start:end], names, start)
        if problem:
            return problem
        start = end
    return None


def _type_problem(actual: pa.Schema, expected: pa.Schema, lenient_strings: bool) -> str | None:
    diffs = []
    for i, (a, e) in enumerate(zip(actual.types, expected.types)):
        if a == e or (lenient_strings and a in _STRING_TYPES and e in _STRING_TYPES):
            continue
        diffs.append(f"column {i} {expected.names[i]!r}: got {a}, expected {e}")
    return "types differ: " + "; ".join(diffs) if diffs else None


def compare(
    actual: pa.Table,
    expected: pa.Table,
    ordered: bool,
    check_names: bool = False,
    check_types: bool = False,
    lenient_strings: bool = False,
    order_keys: list[int] | None = None,
) -> str | None:
    """None when ``actual`` matches ``expected``, else the differences. Columns match by position
    (engines name unaliased expressions differently) unless ``check_names``; Arrow types are
    compared when ``check_types`` (``lenient_strings``: string, large_string and string_view are
    one type). With ``ordered``, ``order_keys`` (result column positions of the ORDER BY keys)
    lets rows that tie on all keys come in any order."""
    if check_names and actual.column_names != expected.column_names:
        return f"columns {actual.column_names}, expected {expected.column_names}"
    if actual.num_columns != expected.num_columns:
        return f"{actual.num_columns} columns, expected {expected.num_columns}"
    problems = []
    if check_types:
        problem = _type_problem(actual.schema, expected.schema, lenient_strings)
        if problem:
            problems.append(problem)
    if actual.num_rows != expected.num_rows:
        problems.append(f"{actual.num_rows} rows, expected {expected.num_rows}")
    else:
        got, want = _rows(actual), _rows(expected)
        names = expected.column_names
        problem = _same_ordered(got, want, names, order_keys) if ordered else _same_unordered(got, want, names)
        if problem:
            problems.append(problem)
    return "\n".join(problems) or None


def assert_same_result(
    actual: pa.Table,
    expected: pa.Table,
    ordered: bool,
    label: str = "",
    check_types: bool = True,
    lenient_strings: bool = False,
    sql: str | None = None,
) -> None:
    """Assert equal results: values, column names and (unless ``check_types=False``) Arrow types,
    as DuckDB returns them. Give ``sql`` to let rows tying on every ORDER BY key come in any order."""
    keys = order_keys(sql, expected.column_names) if ordered and sql else None
    problem = compare(actual, expected, ordered, check_names=True, check_types=check_types,
                      lenient_strings=lenient_strings, order_keys=keys)
    assert problem is None, f"{label}: {problem}"


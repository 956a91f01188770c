"""Result comparison with DuckDB as the oracle: floats within 1% + 1e-8, order only when asked."""

from __future__ import annotations

import datetime
import decimal
import math

import pyarrow as pa

REL_TOL = 0.01
ABS_TOL = 1e-8


def _norm(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, datetime.datetime):
        return v.replace(tzinfo=None)
    return v


def _same(a, b) -> bool:
    a, b = _norm(a), _norm(b)
    if a is None or b is None:
        return a is None and b is None
    numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
    if numbers and (isinstance(a, float) or isinstance(b, float)):
        if math.isnan(a) and math.isnan(b):
            return True
        return abs(a - b) <= REL_TOL * abs(b) + ABS_TOL
    return a == b


def _key(row):
    return tuple((v is None, str(type(_norm(v))), _norm(v) if v is not None else 0) for v in row)


def rows_of(t: pa.Table) -> list[tuple]:
    return list(zip(*[c.to_pylist() for c in t.columns])) if t.num_columns else []


def assert_same_result(actual: pa.Table, expected: pa.Table, ordered: bool, label: str = "") -> None:
    assert actual.column_names == expected.column_names, (
        f"{label}: columns {actual.column_names} != {expected.column_names}"
    )
    got, want = rows_of(actual), rows_of(expected)
    assert len(got) == len(want), f"{label}: {len(got)} rows, expected {len(want)}"
    if not ordered:
        got, want = sorted(got, key=_key), sorted(want, key=_key)
    for i, (g, w) in enumerate(zip(got, want)):
        for j, (a, b) in enumerate(zip(g, w)):
            assert _same(a, b), f"{label}: row {i} column {actual.column_names[j]}: {a!r} != {b!r}\n got {g}\nwant {w}"

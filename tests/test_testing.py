"""The answer checker itself (puffin/testing.py): exact where it must be, tolerant only for floats."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from puffin.testing import assert_same_result, compare, has_order_by, order_keys


def t(**cols) -> pa.Table:
    return pa.table(cols)


def test_decimals_and_integers_are_exact():
    want = pa.table({"x": pa.array([Decimal("1234567890123456.78")], pa.decimal128(18, 2))})
    off_by_a_cent = pa.table({"x": pa.array([Decimal("1234567890123456.77")], pa.decimal128(18, 2))})
    assert compare(want, want, ordered=False) is None
    assert compare(off_by_a_cent, want, ordered=False) is not None  # 1% (or 1e-9) would pass it
    assert compare(t(x=[2**62 + 1]), t(x=[2**62]), ordered=False) is not None
    assert compare(t(x=[10]), t(x=[10]), ordered=False) is None


def test_floats_have_a_tight_relative_tolerance_and_nan_equals_nan():
    assert compare(t(x=[1.0 + 1e-12]), t(x=[1.0]), ordered=False) is None
    assert compare(t(x=[1.0 + 1e-6]), t(x=[1.0]), ordered=False) is not None
    assert compare(t(x=[float("nan")]), t(x=[float("nan")]), ordered=False) is None
    assert compare(t(x=[float("nan")]), t(x=[1.0]), ordered=False) is not None
    assert compare(t(x=[float("inf")]), t(x=[float("inf")]), ordered=False) is None
    assert compare(t(x=[None]), t(x=[0.0]), ordered=False) is not None


def test_dates_timestamps_and_nested_values_are_exact():
    day = dt.date(2024, 2, 29)
    assert compare(t(d=[day]), t(d=[day + dt.timedelta(days=1)]), ordered=False) is not None
    stamp = dt.datetime(2024, 1, 1, 12, 0, 0, 1)
    assert compare(t(s=[stamp]), t(s=[stamp.replace(microsecond=0)]), ordered=False) is not None
    assert compare(t(l=[[1, 2]]), t(l=[[1, 2]]), ordered=False) is None
    assert compare(t(l=[[1, 2]]), t(l=[[2, 1]]), ordered=False) is not None
    assert compare(t(s=[{"a": 1.0}]), t(s=[{"a": 1.0 + 1e-13}]), ordered=False) is None
    assert compare(t(b=[True]), t(b=[1]), ordered=False) is not None


def test_types_are_checked_by_assert_same_result_only():
    got = pa.table({"x": pa.array([1], pa.int32())})
    want = pa.table({"x": pa.array([1], pa.int64())})
    assert compare(got, want, ordered=False) is None
    assert "types differ" in compare(got, want, ordered=False, check_types=True)
    with pytest.raises(AssertionError, match="types differ"):
        assert_same_result(got, want, ordered=False)
    assert_same_result(got, want, ordered=False, check_types=False)
    views = pa.table({"s": pa.array(["a"], pa.string_view())})
    strings = pa.table({"s": pa.array(["a"], pa.string())})
    with pytest.raises(AssertionError, match="string_view"):
        assert_same_result(views, strings, ordered=False)
    assert_same_result(views, strings, ordered=False, lenient_strings=True)


def test_duckdb_result_matches_itself_with_types():
    sql = "SELECT 1.5::DECIMAL(10,2) AS d, 'x' AS s, [1, NULL] AS l, {'a': 1} AS st, 'nan'::DOUBLE AS f"
    a = duckdb.sql(sql).to_arrow_table()
    b = duckdb.sql(sql).to_arrow_table()
    assert_same_result(a, b, ordered=False)


def test_unordered_results_sort_mixed_values():
    got = t(x=pa.array([3.0, None, 1.0, float("nan")]), y=["c", "n", "a", "z"])
    want = t(x=pa.array([None, float("nan"), 1.0, 3.0]), y=["n", "z", "a", "c"])
    assert compare(got, want, ordered=False) is None
    assert compare(got, want, ordered=True) is not None
    mixed = [Decimal("2.5"), 1, 3.0, None]
    assert compare(pa.table({"x": pa.array([str(v) for v in mixed])}),
                   pa.table({"x": pa.array([str(v) for v in reversed(mixed)])}), ordered=False) is None


def test_order_counts_only_up_to_ties_on_the_order_keys():
    sql = "SELECT k, v FROM t ORDER BY k"
    assert has_order_by(sql) and not has_order_by("SELECT * FROM (SELECT 1 ORDER BY 1)")
    assert order_keys(sql, ["k", "v"]) == [0]
    assert order_keys("SELECT k, v FROM t ORDER BY 2 DESC, k", ["k", "v"]) == [1, 0]
    assert order_keys("SELECT k + 1 AS a FROM t ORDER BY k", ["a"]) is None
    want = t(k=[1, 1, 2], v=["a", "b", "c"])
    got = t(k=[1, 1, 2], v=["b", "a", "c"])
    assert_same_result(got, want, ordered=True, sql=sql)
    with pytest.raises(AssertionError):
        assert_same_result(got, want, ordered=True)  # without the keys, every row's place counts
    with pytest.raises(AssertionError):
        assert_same_result(t(k=[2, 1, 1], v=["c", "a", "b"]), want, ordered=True, sql=sql)

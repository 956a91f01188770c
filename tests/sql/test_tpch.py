"""All 22 TPC-H queries against DuckDB on the same files: 1 and 8 partitions, local Ray and
a 3-node cluster. The 8-partition runs force hash exchanges (no broadcast, no replication)
so shuffles, partial/final aggregates and co-partitioned joins are exercised. Values, column
names and Arrow types must match DuckDB's (tests/sql/test_layouts.py does the same over many
data layouts and partition counts)."""

from __future__ import annotations

import pytest

import puffin
from puffin.demo import register_tpch
from puffin.testing import assert_same_result, has_order_by
from tests.conftest import tpch_query

SHUFFLE_EVERYTHING = {"broadcast_bytes": 0, "replicate_bytes": 0}


@pytest.fixture(scope="module", params=[1, 8], ids=["p1", "p8"])
def con(request, backend, tpch_dir):
    n = request.param
    c = puffin.connect(target_partitions=n, config=SHUFFLE_EVERYTHING if n > 1 else None)
    register_tpch(c, tpch_dir)
    return c


@pytest.mark.parametrize("q", range(1, 23), ids=lambda q: f"q{q:02d}")
def test_tpch_matches_duckdb(con, oracle, q):
    sql = tpch_query(q)
    got = con.sql(sql, timeout=300).arrow()
    want = oracle.sql(sql).to_arrow_table()
    assert_same_result(got, want, ordered=has_order_by(sql), label=f"q{q}", sql=sql)
